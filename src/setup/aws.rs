//! The AWS side of setup: what exists, and how it differs from the plan. Creating and updating
//! is in [`apply`](mod@apply), deleting in [`destroy`](mod@destroy).

use std::time::Duration;

use aws_sdk_firehose::types as fh;
use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::types as ks;

use super::{
    desired, Action, Capacity, Destination, Plan, Planned, PolicyDocument, SetupInputs,
    TAG_PIPELINE,
};
use crate::{Error, Result};

mod apply;
mod destroy;

pub use apply::apply;
pub use destroy::destroy;

/// Clients, account and region.
pub(crate) struct Env {
    pub(crate) account: String,
    pub(crate) region: String,
    kinesis: aws_sdk_kinesis::Client,
    firehose: aws_sdk_firehose::Client,
    kms: aws_sdk_kms::Client,
    iam: aws_sdk_iam::Client,
    s3: aws_sdk_s3::Client,
    wait: Duration,
}

/// What discovery found before planning.
#[derive(Debug, Default)]
pub(crate) struct Found {
    pub(crate) key_arn: Option<String>,
}

/// What [`apply()`] or [`destroy()`] did.
#[derive(Debug, Clone)]
pub struct ApplyReport {
    /// The plan as it was before (what each resource needed).
    pub plan: Plan,
    /// One line per change made, in order; empty when nothing needed changing.
    pub changes: Vec<String>,
}

fn fail(what: &str, e: impl ProvideErrorMetadata + std::error::Error) -> Error {
    match (e.code(), e.message()) {
        (Some(code), Some(msg)) => Error::Setup(format!("{what}: {code}: {msg}")),
        (Some(code), None) => Error::Setup(format!("{what}: {code}")),
        _ => Error::Setup(format!(
            "{what}: {}",
            aws_sdk_kinesis::error::DisplayErrorContext(&e)
        )),
    }
}

fn is_not_found(e: &impl ProvideErrorMetadata) -> bool {
    matches!(
        e.code(),
        Some(
            "ResourceNotFoundException"
                | "NotFoundException"
                | "NoSuchEntity"
                | "NoSuchBucket"
                | "NotFound"
                | "NoSuchTagSet"
                | "NoSuchTagSetError"
                | "ServerSideEncryptionConfigurationNotFoundError"
        )
    )
}

/// The result of an AWS call, in rivulet's terms.
trait Call<T> {
    /// The output, or the failure as a setup error naming the call (`service:Operation`).
    fn or_fail(self, call: &str) -> Result<T>;
    /// The output, `None` when AWS says the resource (or its part asked for) does not exist, or
    /// the failure as a setup error naming the call.
    fn if_exists(self, call: &str) -> Result<Option<T>>;
}

impl<T, E: ProvideErrorMetadata + std::error::Error> Call<T> for std::result::Result<T, E> {
    fn or_fail(self, call: &str) -> Result<T> {
        self.map_err(|e| fail(call, e))
    }

    fn if_exists(self, call: &str) -> Result<Option<T>> {
        match self {
            Ok(output) => Ok(Some(output)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(fail(call, e)),
        }
    }
}

fn build_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Setup(format!("{what}: {e}"))
}

/// IAM returns policy documents URL-encoded.
fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a policy AWS returned (JSON, possibly URL-encoded) equals `doc`.
fn same_policy(returned: Option<&str>, doc: &super::PolicyDocument) -> bool {
    let Some(r) = returned else { return false };
    let text = if r.trim_start().starts_with('{') {
        r.to_owned()
    } else {
        url_decode(r)
    };
    serde_json::from_str::<serde_json::Value>(&text).is_ok_and(|v| v == doc.to_value())
}

impl Env {
    pub(crate) async fn connect(inputs: &SetupInputs) -> Result<Self> {
        let shared =
            crate::aws::load_config(inputs.region.clone(), inputs.endpoint_url.clone(), "setup")
                .await?;
        let region = shared.region().map(|r| r.to_string()).unwrap_or_default();
        let sts = aws_sdk_sts::Client::new(&shared);
        let who = sts
            .get_caller_identity()
            .send()
            .await
            .or_fail("sts:GetCallerIdentity")?;
        let account = who
            .account()
            .ok_or_else(|| Error::Setup("sts:GetCallerIdentity returned no account".into()))?
            .to_owned();
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&shared)
                .force_path_style(true)
                .build(),
        );
        Ok(Self {
            account,
            region,
            kinesis: aws_sdk_kinesis::Client::new(&shared),
            firehose: aws_sdk_firehose::Client::new(&shared),
            kms: aws_sdk_kms::Client::new(&shared),
            iam: aws_sdk_iam::Client::new(&shared),
            s3,
            wait: Duration::from_secs(inputs.section.wait_timeout_secs.unwrap_or(300)),
        })
    }

    pub(crate) async fn discover(&self, inputs: &SetupInputs) -> Result<Found> {
        let alias = super::key_alias(&inputs.pipeline);
        let key_arn = self.key_arn(&alias).await?;
        if !inputs.section.encryption.unwrap_or(true) && key_arn.is_some() {
            return Err(Error::Setup(format!(
                "`[setup] encryption = false`, but the pipeline's key {alias} exists: its streams, \
                 delivery streams and bucket are encrypted with it, and turning that off is not \
                 done by setup (it would leave them unreadable to the roles); destroy first, or \
                 keep encryption on"
            )));
        }
        Ok(Found { key_arn })
    }

    /// The inputs' resources, each with what apply would do to it given what exists.
    pub(crate) async fn plan(&self, inputs: &SetupInputs, found: &Found) -> Result<Plan> {
        let mut plan = desired(
            inputs,
            &self.account,
            &self.region,
            found.key_arn.as_deref(),
        )?;
        self.compare(&mut plan, found).await?;
        Ok(plan)
    }

    /// The ARN of the role named `role` in this account.
    fn role_arn(&self, role: &str) -> String {
        format!("arn:aws:iam::{}:role/{role}", self.account)
    }

    async fn rotation_enabled(&self, key_arn: &str) -> Result<bool> {
        let rotation = self
            .kms
            .get_key_rotation_status()
            .key_id(key_arn)
            .send()
            .await
            .or_fail("kms:GetKeyRotationStatus")?;
        Ok(rotation.key_rotation_enabled())
    }

    async fn key_arn(&self, alias: &str) -> Result<Option<String>> {
        let Some(k) = self
            .kms
            .describe_key()
            .key_id(alias)
            .send()
            .await
            .if_exists("kms:DescribeKey")?
        else {
            return Ok(None);
        };
        let meta = k.key_metadata();
        let pending = meta.and_then(|m| m.key_state()).is_some_and(|s| {
            matches!(
                s,
                aws_sdk_kms::types::KeyState::PendingDeletion
                    | aws_sdk_kms::types::KeyState::PendingReplicaDeletion
            )
        });
        if pending {
            return Err(Error::Setup(format!(
                "the key of {alias} is pending deletion: cancel the deletion \
                 (kms:CancelKeyDeletion) or delete the alias first"
            )));
        }
        Ok(meta.and_then(|m| m.arn()).map(str::to_owned))
    }
}

/// Planning against what exists: one comparison per kind of resource.
impl Env {
    /// Sets each resource's action from what exists.
    pub(crate) async fn compare(&self, plan: &mut Plan, found: &Found) -> Result<()> {
        let pipeline = plan.pipeline.clone();
        for (r, action) in &mut plan.resources {
            *action = match r {
                Planned::Key { policy, .. } => self.compare_key(policy, found).await?,
                Planned::Bucket { name, encrypted } => {
                    self.compare_bucket(name, *encrypted, &pipeline, found)
                        .await?
                }
                Planned::Stream {
                    name,
                    capacity,
                    encrypted,
                } => {
                    self.compare_stream(name, capacity, *encrypted, &pipeline, found)
                        .await?
                }
                Planned::Role {
                    name,
                    trust,
                    policy,
                    ..
                } => self.compare_role(name, trust, policy, &pipeline).await?,
                Planned::DeliveryStream {
                    name,
                    role,
                    destination,
                    encrypted,
                } => {
                    self.compare_delivery(name, role, destination, *encrypted, &pipeline, found)
                        .await?
                }
            };
        }
        Ok(())
    }

    /// The key's rotation and key policy against the plan.
    async fn compare_key(&self, policy: &PolicyDocument, found: &Found) -> Result<Action> {
        let Some(arn) = &found.key_arn else {
            return Ok(Action::Create);
        };
        let mut what = Vec::new();
        if !self.rotation_enabled(arn).await? {
            what.push("rotation".to_owned());
        }
        let current = self
            .kms
            .get_key_policy()
            .key_id(arn)
            .policy_name("default")
            .send()
            .await
            .or_fail("kms:GetKeyPolicy")?;
        if !same_policy(current.policy(), policy) {
            what.push("key policy".to_owned());
        }
        Ok(update_or_unchanged(what))
    }

    /// Who owns the bucket, and its default encryption against the plan.
    async fn compare_bucket(
        &self,
        name: &str,
        encrypted: bool,
        pipeline: &str,
        found: &Found,
    ) -> Result<Action> {
        Ok(match self.bucket_owner(name).await? {
            None => Action::Create,
            Some(owner) if owner != pipeline => Action::External,
            Some(_) => {
                let want = if encrypted {
                    found.key_arn.clone()
                } else {
                    None
                };
                let have = self.bucket_key(name).await?;
                update_or_unchanged(if want.is_some() && have != want {
                    vec!["default encryption".into()]
                } else {
                    vec![]
                })
            }
        })
    }

    /// Who owns the stream, and its capacity and encryption against the plan.
    async fn compare_stream(
        &self,
        name: &str,
        capacity: &Capacity,
        encrypted: bool,
        pipeline: &str,
        found: &Found,
    ) -> Result<Action> {
        Ok(match self.stream(name).await? {
            None => Action::Create,
            Some(s) if s.owner.as_deref() != Some(pipeline) => Action::External,
            Some(s) => {
                let mut what = Vec::new();
                if s.capacity != *capacity {
                    what.push(format!("capacity {:?} → {capacity:?}", s.capacity));
                }
                if encrypted && s.key != found.key_arn {
                    what.push("encryption".into());
                }
                update_or_unchanged(what)
            }
        })
    }

    /// The role's trust and inline policy against the plan; a role of someone else's is an error.
    async fn compare_role(
        &self,
        name: &str,
        trust: &PolicyDocument,
        policy: &PolicyDocument,
        pipeline: &str,
    ) -> Result<Action> {
        let current_trust = match self.role(name).await? {
            None => return Ok(Action::Create),
            Some((owner, _)) if owner.as_deref() != Some(pipeline) => {
                return Err(Error::Setup(format!(
                    "IAM role {name} exists and was not created by rivulet for pipeline \
                     `{pipeline}`; rename the pipeline or remove the role"
                )));
            }
            Some((_, current_trust)) => current_trust,
        };
        let mut what = Vec::new();
        if !same_policy(current_trust.as_deref(), trust) {
            what.push("trust policy".into());
        }
        let current = self
            .iam
            .get_role_policy()
            .role_name(name)
            .policy_name("rivulet")
            .send()
            .await
            .if_exists("iam:GetRolePolicy")?
            .map(|p| p.policy_document().to_owned());
        if !same_policy(current.as_deref(), policy) {
            what.push("policy".into());
        }
        Ok(update_or_unchanged(what))
    }

    /// The delivery stream's settings against the plan; one of someone else's is an error.
    async fn compare_delivery(
        &self,
        name: &str,
        role: &str,
        destination: &Destination,
        encrypted: bool,
        pipeline: &str,
        found: &Found,
    ) -> Result<Action> {
        let d = match self.delivery(name).await? {
            None => return Ok(Action::Create),
            Some(d) if d.owner.as_deref() != Some(pipeline) => {
                return Err(Error::Setup(format!(
                    "Firehose delivery stream {name} exists and was not created by \
                     rivulet for pipeline `{pipeline}`: rivulet will not change its \
                     destination; remove it from [setup.delivery] or delete it"
                )));
            }
            Some(d) => d,
        };
        Ok(update_or_unchanged(d.differences(
            &self.role_arn(role),
            destination,
            encrypted,
            found.key_arn.as_deref(),
        )))
    }
}

/// Reading what exists, one resource at a time (`None`: it does not exist).
impl Env {
    /// The bucket's `rivulet:pipeline` tag (empty when untagged).
    async fn bucket_owner(&self, name: &str) -> Result<Option<String>> {
        let head = self.s3.head_bucket().bucket(name).send().await;
        // A HEAD response has no body: a missing bucket may come as a bare 404, without a code.
        let missing = head
            .as_ref()
            .is_err_and(|e| e.raw_response().is_some_and(|r| r.status().as_u16() == 404));
        if missing || head.if_exists("s3:HeadBucket")?.is_none() {
            return Ok(None);
        }
        let tagging = self
            .s3
            .get_bucket_tagging()
            .bucket(name)
            .send()
            .await
            .if_exists("s3:GetBucketTagging")?;
        Ok(Some(
            tagging
                .and_then(|t| {
                    t.tag_set()
                        .iter()
                        .find(|t| t.key() == TAG_PIPELINE)
                        .map(|t| t.value().to_owned())
                })
                .unwrap_or_default(),
        ))
    }

    /// The KMS key of the bucket's default encryption.
    async fn bucket_key(&self, name: &str) -> Result<Option<String>> {
        let encryption = self
            .s3
            .get_bucket_encryption()
            .bucket(name)
            .send()
            .await
            .if_exists("s3:GetBucketEncryption")?;
        Ok(encryption.and_then(|enc| {
            enc.server_side_encryption_configuration()
                .and_then(|c| c.rules().first())
                .and_then(|r| r.apply_server_side_encryption_by_default())
                .and_then(|d| d.kms_master_key_id())
                .map(str::to_owned)
        }))
    }

    async fn stream(&self, name: &str) -> Result<Option<StreamState>> {
        let Some(d) = self
            .kinesis
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
            .if_exists("kinesis:DescribeStreamSummary")?
        else {
            return Ok(None);
        };
        let s = d.stream_description_summary();
        let on_demand = s
            .and_then(|s| s.stream_mode_details())
            .is_some_and(|m| m.stream_mode() == &ks::StreamMode::OnDemand);
        let capacity = if on_demand {
            Capacity::OnDemand
        } else {
            Capacity::Shards(s.map(|s| s.open_shard_count()).unwrap_or(0) as u32)
        };
        let key = s
            .filter(|s| s.encryption_type() == Some(&ks::EncryptionType::Kms))
            .and_then(|s| s.key_id())
            .map(str::to_owned);
        let tags = self
            .kinesis
            .list_tags_for_stream()
            .stream_name(name)
            .send()
            .await
            .or_fail("kinesis:ListTagsForStream")?;
        let owner = tags
            .tags()
            .iter()
            .find(|t| t.key() == TAG_PIPELINE)
            .and_then(|t| t.value())
            .map(str::to_owned);
        Ok(Some(StreamState {
            arn: s.map(|s| s.stream_arn().to_owned()).unwrap_or_default(),
            capacity,
            key,
            owner,
            active: s.is_some_and(|s| s.stream_status() == &ks::StreamStatus::Active),
        }))
    }

    /// The role's `rivulet:pipeline` tag and trust policy.
    async fn role(&self, name: &str) -> Result<Option<(Option<String>, Option<String>)>> {
        let Some(role) = self
            .iam
            .get_role()
            .role_name(name)
            .send()
            .await
            .if_exists("iam:GetRole")?
        else {
            return Ok(None);
        };
        let trust = role
            .role()
            .and_then(|r| r.assume_role_policy_document())
            .map(str::to_owned);
        let tags = self
            .iam
            .list_role_tags()
            .role_name(name)
            .send()
            .await
            .or_fail("iam:ListRoleTags")?;
        let owner = tags
            .tags()
            .iter()
            .find(|t| t.key() == TAG_PIPELINE)
            .map(|t| t.value().to_owned());
        Ok(Some((owner, trust)))
    }

    async fn delivery(&self, name: &str) -> Result<Option<DeliveryState>> {
        let Some(d) = self
            .firehose
            .describe_delivery_stream()
            .delivery_stream_name(name)
            .send()
            .await
            .if_exists("firehose:DescribeDeliveryStream")?
        else {
            return Ok(None);
        };
        let mut state = d
            .delivery_stream_description()
            .map(DeliveryState::described)
            .unwrap_or_default();
        let tags = self
            .firehose
            .list_tags_for_delivery_stream()
            .delivery_stream_name(name)
            .send()
            .await
            .or_fail("firehose:ListTagsForDeliveryStream")?;
        state.owner = tags
            .tags()
            .iter()
            .find(|t| t.key() == TAG_PIPELINE)
            .and_then(|t| t.value())
            .map(str::to_owned);
        Ok(Some(state))
    }

    async fn wait_stream_active(&self, name: &str) -> Result<()> {
        self.wait_active(&format!("Kinesis stream {name}"), async || {
            Ok(self.stream(name).await?.is_some_and(|s| s.active))
        })
        .await
    }

    async fn wait_delivery_active(&self, name: &str) -> Result<()> {
        self.wait_active(&format!("Firehose delivery stream {name}"), async || {
            Ok(self.delivery(name).await?.is_some_and(|s| s.active))
        })
        .await
    }

    /// Polls `active` until it holds, or fails once the wait timeout has passed.
    async fn wait_active(&self, what: &str, active: impl AsyncFn() -> Result<bool>) -> Result<()> {
        let started = std::time::Instant::now();
        loop {
            if active().await? {
                return Ok(());
            }
            if started.elapsed() > self.wait {
                return Err(Error::Setup(format!(
                    "{what} did not become ACTIVE within {} s",
                    self.wait.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

fn buffering(h: Option<&fh::BufferingHints>) -> (u32, u32) {
    (
        h.and_then(|h| h.interval_in_seconds()).unwrap_or(300) as u32,
        h.and_then(|h| h.size_in_mbs()).unwrap_or(5) as u32,
    )
}

fn update_or_unchanged(what: Vec<String>) -> Action {
    if what.is_empty() {
        Action::Unchanged
    } else {
        Action::Update(what)
    }
}

#[derive(Debug)]
struct StreamState {
    arn: String,
    capacity: Capacity,
    key: Option<String>,
    owner: Option<String>,
    active: bool,
}

#[derive(Debug, Default)]
struct DeliveryState {
    version: Option<String>,
    destination_id: Option<String>,
    active: bool,
    owner: Option<String>,
    role_arn: Option<String>,
    bucket_arn: Option<String>,
    prefix: Option<String>,
    error_prefix: Option<String>,
    buffering: (u32, u32),
    compression: Option<String>,
    key_arn: Option<String>,
}

/// Copies the S3 settings of a Firehose S3 destination description into a [`DeliveryState`]
/// (the extended and the plain description have the same accessors and no trait in common).
macro_rules! read_s3_description {
    ($state:expr, $x:expr) => {{
        $state.role_arn = Some($x.role_arn().to_owned());
        $state.bucket_arn = Some($x.bucket_arn().to_owned());
        $state.prefix = $x.prefix().map(str::to_owned);
        $state.error_prefix = $x.error_output_prefix().map(str::to_owned);
        $state.buffering = buffering($x.buffering_hints());
        $state.compression = Some($x.compression_format().as_str().to_owned());
    }};
}

impl DeliveryState {
    /// The state Firehose describes (all but the owner, which is a tag).
    fn described(desc: &fh::DeliveryStreamDescription) -> Self {
        let dest = desc.destinations().first();
        let mut state = DeliveryState {
            version: Some(desc.version_id().to_owned()),
            destination_id: dest.map(|d| d.destination_id().to_owned()),
            active: desc.delivery_stream_status() == &fh::DeliveryStreamStatus::Active,
            key_arn: desc
                .delivery_stream_encryption_configuration()
                // Enabled, or being enabled (a status that is absent is taken as enabled: moto
                // leaves it out).
                .filter(|c| {
                    matches!(
                        c.status(),
                        None | Some(
                            fh::DeliveryStreamEncryptionStatus::Enabled
                                | fh::DeliveryStreamEncryptionStatus::Enabling
                        )
                    )
                })
                .and_then(|c| c.key_arn())
                .map(str::to_owned),
            ..DeliveryState::default()
        };
        if let Some(x) = dest.and_then(|d| d.extended_s3_destination_description()) {
            read_s3_description!(state, x);
        } else if let Some(x) = dest.and_then(|d| {
            d.redshift_destination_description()
                .and_then(|r| r.s3_destination_description())
                .or_else(|| {
                    d.amazonopensearchservice_destination_description()
                        .and_then(|o| o.s3_destination_description())
                })
        }) {
            read_s3_description!(state, x);
        }
        state
    }

    /// What differs from the planned role, destination and (when encrypted) key.
    fn differences(
        &self,
        role_arn: &str,
        destination: &Destination,
        encrypted: bool,
        key_arn: Option<&str>,
    ) -> Vec<String> {
        let s3 = destination.s3();
        let mut what = Vec::new();
        if self.role_arn.as_deref() != Some(role_arn) {
            what.push("role".into());
        }
        if self.bucket_arn.as_deref() != Some(format!("arn:aws:s3:::{}", s3.bucket).as_str()) {
            what.push("bucket".into());
        }
        if self.prefix.as_deref().unwrap_or("") != s3.prefix
            || self.error_prefix.as_deref().unwrap_or("") != s3.error_prefix
        {
            what.push("prefixes".into());
        }
        if self.buffering != (s3.buffer_interval_secs, s3.buffer_size_mb) {
            what.push(format!(
                "buffering {} s / {} MiB → {} s / {} MiB",
                self.buffering.0, self.buffering.1, s3.buffer_interval_secs, s3.buffer_size_mb
            ));
        }
        if self.compression.as_deref() != Some(s3.compression.as_str()) {
            what.push("compression".into());
        }
        if encrypted && self.key_arn.as_deref() != key_arn {
            what.push("encryption".into());
        }
        what
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn url_decoding() {
        assert_eq!(super::url_decode("%7B%22a%22%3A1%7D"), "{\"a\":1}");
        assert_eq!(super::url_decode("100%"), "100%");
    }
}
