//! An in-memory Kinesis for unit tests of the source: shards with records, closed shards that end
//! with their children, a stale first listing, injected iterator expiry.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;

use super::api::{ApiError, KinesisApi, RawRecord, RecordsPage};
use super::shards::{ShardInfo, ShardOffset, FULL_RANGE};

#[derive(Debug)]
struct FakeShard {
    info: ShardInfo,
    /// (sequence, partition key, payload, arrival ms)
    records: Vec<(u128, String, Bytes, i64)>,
}

#[derive(Debug, Default)]
struct Inner {
    shards: Vec<FakeShard>,
    next_sequence: u128,
    /// Shard ids the next ListShards answers with (a listing taken before a reshard).
    stale_listing: Option<Vec<String>>,
    /// Ids of shards that are gone from listings (expired).
    hidden: HashSet<String>,
    /// GetRecords calls still to fail with an expired iterator.
    expire_next: usize,
    /// Every GetShardIterator call.
    iterator_calls: Vec<(String, ShardOffset)>,
}

/// The fake service; clones share it.
#[derive(Debug, Clone, Default)]
pub(crate) struct FakeKinesis {
    inner: Arc<Mutex<Inner>>,
}

impl FakeKinesis {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn shard(&self, id: &str, parents: &[&str], closed: bool) {
        self.with(|i| {
            i.shards.push(FakeShard {
                info: ShardInfo {
                    id: Arc::from(id),
                    parents: parents.iter().map(|p| (*p).to_owned()).collect(),
                    hash_range: FULL_RANGE,
                    closed,
                },
                records: Vec::new(),
            })
        });
    }

    /// Appends a record `data` to `shard`, arriving at `arrival_ms`.
    pub(crate) fn put(&self, shard: &str, data: &str, arrival_ms: i64) {
        self.put_bytes(shard, Bytes::from(data.to_owned()), arrival_ms);
    }

    /// Appends a record of any bytes (a KPL aggregate, say) to `shard`.
    pub(crate) fn put_bytes(&self, shard: &str, data: Bytes, arrival_ms: i64) {
        self.with(|i| {
            i.next_sequence += 1;
            let seq = i.next_sequence;
            let s = i
                .shards
                .iter_mut()
                .find(|s| &*s.info.id == shard)
                .expect("known shard");
            s.records.push((seq, "pk".into(), data, arrival_ms));
        });
    }

    pub(crate) fn last_sequence(&self, shard: &str) -> u128 {
        self.with(|i| {
            i.shards
                .iter()
                .find(|s| &*s.info.id == shard)
                .and_then(|s| s.records.last().map(|r| r.0))
                .unwrap_or(0)
        })
    }

    pub(crate) fn stale_listing(&self, ids: &[&str]) {
        self.with(|i| i.stale_listing = Some(ids.iter().map(|s| (*s).to_owned()).collect()));
    }

    pub(crate) fn hide(&self, id: &str) {
        self.with(|i| {
            i.hidden.insert(id.to_owned());
        });
    }

    pub(crate) fn expire_next(&self, n: usize) {
        self.with(|i| i.expire_next = n);
    }

    pub(crate) fn iterator_calls(&self) -> Vec<(String, ShardOffset)> {
        self.with(|i| i.iterator_calls.clone())
    }
}

#[async_trait]
impl KinesisApi for FakeKinesis {
    async fn list_shards(&self) -> Result<Vec<ShardInfo>, ApiError> {
        Ok(self.with(|i| {
            let only = i.stale_listing.take();
            i.shards
                .iter()
                .filter(|s| !i.hidden.contains(&*s.info.id))
                .filter(|s| {
                    only.as_ref()
                        .is_none_or(|o| o.iter().any(|id| *id == *s.info.id))
                })
                .map(|s| s.info.clone())
                .collect()
        }))
    }

    async fn shard_iterator(
        &self,
        shard: &str,
        from: &ShardOffset,
    ) -> Result<Option<String>, ApiError> {
        self.with(|i| {
            i.iterator_calls.push((shard.to_owned(), from.clone()));
            let s = i
                .shards
                .iter()
                .find(|s| &*s.info.id == shard)
                .ok_or_else(|| ApiError::NotFound(format!("no shard {shard}")))?;
            let at = |pred: &dyn Fn(&(u128, String, Bytes, i64)) -> bool| {
                s.records.iter().position(pred).unwrap_or(s.records.len())
            };
            let index = match from {
                ShardOffset::TrimHorizon => 0,
                ShardOffset::Latest => s.records.len(),
                ShardOffset::AtTimestamp(ms) => at(&|r| r.3 >= *ms),
                ShardOffset::After { sequence, sub } => {
                    let seq: u128 = sequence.parse().expect("a sequence number");
                    match sub {
                        None => at(&|r| r.0 > seq),
                        Some(_) => at(&|r| r.0 >= seq),
                    }
                }
                ShardOffset::End => return Err(ApiError::Fatal("no iterator at the end".into())),
            };
            if s.info.closed && index >= s.records.len() {
                return Ok(None);
            }
            Ok(Some(format!("{shard}|{index}")))
        })
    }

    async fn get_records(&self, iterator: &str, limit: i32) -> Result<RecordsPage, ApiError> {
        self.with(|i| {
            if i.expire_next > 0 {
                i.expire_next -= 1;
                return Err(ApiError::ExpiredIterator("expired (fake)".into()));
            }
            let (shard, index) = iterator.split_once('|').expect("a fake iterator");
            let index: usize = index.parse().expect("an index");
            let s = i
                .shards
                .iter()
                .find(|s| &*s.info.id == shard)
                .expect("known shard");
            let end = (index + limit as usize).min(s.records.len());
            let records = s.records[index..end]
                .iter()
                .map(|(seq, pk, data, ts)| RawRecord {
                    data: data.clone(),
                    partition_key: pk.clone(),
                    sequence: seq.to_string(),
                    arrival_ms: *ts,
                })
                .collect();
            let at_end = end >= s.records.len();
            let (next_iterator, child_shards) = if s.info.closed && at_end {
                let children = i
                    .shards
                    .iter()
                    .filter(|c| c.info.parents.iter().any(|p| p == shard))
                    .map(|c| c.info.clone())
                    .collect();
                (None, children)
            } else {
                (Some(format!("{shard}|{end}")), Vec::new())
            };
            Ok(RecordsPage {
                records,
                next_iterator,
                millis_behind: Some(if at_end { 0 } else { 1000 }),
                child_shards,
            })
        })
    }
}
