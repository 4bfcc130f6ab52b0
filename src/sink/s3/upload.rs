//! Uploads: one `PutObject`, or a multipart upload that is aborted unless it completes.

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use object_store::{MultipartUpload, ObjectStoreExt as _, PutPayload};

use super::{S3Sink, MAX_PUT_BYTES, MIN_PART_BYTES};
use crate::aws::s3::object_path;
use crate::{Error, Result};

/// Parts of one multipart upload sent at the same time.
const PARTS_IN_FLIGHT: usize = 4;

impl S3Sink {
    /// Uploads `data` as the object `key`: in parts from the multipart threshold on.
    pub(super) async fn upload(&self, key: &str, data: Vec<u8>) -> Result<()> {
        let path = object_path(key).map_err(|e| Error::sink(&self.name, e))?;
        let fail = |e: object_store::Error| {
            Error::sink(
                &self.name,
                format!("uploading s3://{}/{key}: {e}", self.bucket),
            )
        };
        if data.len() < self.multipart_threshold && data.len() <= MAX_PUT_BYTES {
            self.store
                .put(&path, PutPayload::from(data))
                .await
                .map_err(fail)?;
            return Ok(());
        }
        let upload = OpenUpload::new(self.store.put_multipart(&path).await.map_err(fail)?);
        let part = (self.multipart_threshold / 2).max(MIN_PART_BYTES);
        let data = Bytes::from(data);
        let mut parts = Vec::new();
        for at in (0..data.len()).step_by(part) {
            let payload = PutPayload::from(data.slice(at..(at + part).min(data.len())));
            parts.push(upload.put_part(payload).await.map_err(fail)?);
        }
        // At most a few parts in flight. The upload is aborted (not left open and billed) when
        // any part or the completion fails, and when this future is dropped before it is done.
        let sent = futures::stream::iter(parts)
            .buffer_unordered(PARTS_IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await;
        let done = match sent {
            Ok(_) => upload.complete().await,
            Err(e) => Err(e),
        };
        if let Err(e) = done {
            if let Err(abort) = upload.abort().await {
                tracing::warn!(sink = %self.name, key, "aborting the multipart upload failed: {abort}");
            }
            return Err(fail(e));
        }
        Ok(())
    }
}

/// A multipart upload shared by its uploader and the registry of uploads in progress.
type SharedUpload = Arc<tokio::sync::Mutex<Option<Box<dyn MultipartUpload>>>>;

/// Multipart uploads in progress in this process, for [`abort_uploads_in_progress`].
static IN_PROGRESS: std::sync::Mutex<Vec<(u64, SharedUpload)>> = std::sync::Mutex::new(Vec::new());
static NEXT_UPLOAD: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn in_progress() -> std::sync::MutexGuard<'static, Vec<(u64, SharedUpload)>> {
    IN_PROGRESS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A multipart upload that is aborted unless it completes: when its uploader fails, when the
/// uploader's future is dropped (a task aborted, a pipeline stopped), and by
/// [`abort_uploads_in_progress`].
struct OpenUpload {
    id: u64,
    upload: SharedUpload,
}

impl OpenUpload {
    fn new(upload: Box<dyn MultipartUpload>) -> Self {
        let id = NEXT_UPLOAD.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let upload = Arc::new(tokio::sync::Mutex::new(Some(upload)));
        in_progress().push((id, Arc::clone(&upload)));
        Self { id, upload }
    }

    fn gone() -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: "the multipart upload was aborted".into(),
        }
    }

    async fn put_part(&self, data: PutPayload) -> object_store::Result<object_store::UploadPart> {
        match self.upload.lock().await.as_mut() {
            Some(u) => Ok(u.put_part(data)),
            None => Err(Self::gone()),
        }
    }

    async fn complete(&self) -> object_store::Result<()> {
        let mut slot = self.upload.lock().await;
        let Some(u) = slot.as_mut() else {
            return Err(Self::gone());
        };
        u.complete().await?;
        *slot = None;
        Ok(())
    }

    async fn abort(&self) -> object_store::Result<()> {
        match self.upload.lock().await.take() {
            Some(mut u) => u.abort().await,
            None => Ok(()),
        }
    }
}

impl Drop for OpenUpload {
    fn drop(&mut self) {
        in_progress().retain(|(id, _)| *id != self.id);
        // Still open: the uploader stopped before it completed or aborted the upload.
        let open = match self.upload.try_lock() {
            Ok(mut slot) => slot.take(),
            Err(_) => None,
        };
        if let (Some(mut upload), Ok(runtime)) = (open, tokio::runtime::Handle::try_current()) {
            runtime.spawn(async move {
                if let Err(e) = upload.abort().await {
                    tracing::warn!("aborting an interrupted multipart upload failed: {e}");
                }
            });
        }
    }
}

/// Aborts every multipart upload of the S3 sinks of this process that is still in progress, so
/// that none is left open (and billed) when the process exits without finishing them: the CLI
/// calls it when a second Ctrl-C aborts a run. The sinks whose uploads it aborts fail.
pub async fn abort_uploads_in_progress() {
    let open: Vec<SharedUpload> = in_progress().drain(..).map(|(_, u)| u).collect();
    for upload in open {
        if let Some(mut u) = upload.lock().await.take() {
            if let Err(e) = u.abort().await {
                tracing::warn!("aborting a multipart upload failed: {e}");
            }
        }
    }
}
