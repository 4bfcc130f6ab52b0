//! The AWS side of setup: what exists, and the calls that create, update and delete.

use std::time::Duration;

use aws_sdk_firehose::types as fh;
use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::types as ks;

use super::{
    desired, Action, Capacity, Destination, Plan, Planned, PolicyDocument, SetupInputs,
    TAG_PIPELINE,
};
use crate::{Error, Result};

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

/// What [`apply`] or [`destroy`] did.
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
            .map_err(|e| fail("sts:GetCallerIdentity", e))?;
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

    async fn key_arn(&self, alias: &str) -> Result<Option<String>> {
        match self.kms.describe_key().key_id(alias).send().await {
            Ok(k) => {
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
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(fail("kms:DescribeKey", e)),
        }
    }

    /// Sets each resource's action from what exists.
    pub(crate) async fn compare(&self, plan: &mut Plan, found: &Found) -> Result<()> {
        let pipeline = plan.pipeline.clone();
        for (r, action) in &mut plan.resources {
            *action = match r {
                Planned::Key { policy, .. } => match &found.key_arn {
                    None => Action::Create,
                    Some(arn) => {
                        let mut what = Vec::new();
                        let rotation = self
                            .kms
                            .get_key_rotation_status()
                            .key_id(arn)
                            .send()
                            .await
                            .map_err(|e| fail("kms:GetKeyRotationStatus", e))?;
                        if !rotation.key_rotation_enabled() {
                            what.push("rotation".to_owned());
                        }
                        let current = self
                            .kms
                            .get_key_policy()
                            .key_id(arn)
                            .policy_name("default")
                            .send()
                            .await
                            .map_err(|e| fail("kms:GetKeyPolicy", e))?;
                        if !same_policy(current.policy(), policy) {
                            what.push("key policy".to_owned());
                        }
                        update_or_unchanged(what)
                    }
                },
                Planned::Bucket { name, encrypted } => match self.bucket_owner(name).await? {
                    None => Action::Create,
                    Some(owner) if owner != pipeline => Action::External,
                    Some(_) => {
                        let want = if *encrypted {
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
                },
                Planned::Stream {
                    name,
                    capacity,
                    encrypted,
                } => match self.stream(name).await? {
                    None => Action::Create,
                    Some(s) if s.owner.as_deref() != Some(pipeline.as_str()) => Action::External,
                    Some(s) => {
                        let mut what = Vec::new();
                        if s.capacity != *capacity {
                            what.push(format!("capacity {:?} → {capacity:?}", s.capacity));
                        }
                        if *encrypted && s.key != found.key_arn {
                            what.push("encryption".into());
                        }
                        update_or_unchanged(what)
                    }
                },
                Planned::Role {
                    name,
                    trust,
                    policy,
                    ..
                } => match self.role(name).await? {
                    None => Action::Create,
                    Some((owner, _)) if owner.as_deref() != Some(pipeline.as_str()) => {
                        return Err(Error::Setup(format!(
                            "IAM role {name} exists and was not created by rivulet for pipeline \
                             `{pipeline}`; rename the pipeline or remove the role"
                        )));
                    }
                    Some((_, current_trust)) => {
                        let mut what = Vec::new();
                        if !same_policy(current_trust.as_deref(), trust) {
                            what.push("trust policy".into());
                        }
                        let current = match self
                            .iam
                            .get_role_policy()
                            .role_name(name.as_str())
                            .policy_name("rivulet")
                            .send()
                            .await
                        {
                            Ok(p) => Some(p.policy_document().to_owned()),
                            Err(e) if is_not_found(&e) => None,
                            Err(e) => return Err(fail("iam:GetRolePolicy", e)),
                        };
                        if !same_policy(current.as_deref(), policy) {
                            what.push("policy".into());
                        }
                        update_or_unchanged(what)
                    }
                },
                Planned::DeliveryStream {
                    name,
                    role,
                    destination,
                    encrypted,
                } => match self.delivery(name).await? {
                    None => Action::Create,
                    Some(d) if d.owner.as_deref() != Some(pipeline.as_str()) => {
                        return Err(Error::Setup(format!(
                            "Firehose delivery stream {name} exists and was not created by \
                             rivulet for pipeline `{pipeline}`: rivulet will not change its \
                             destination; remove it from [setup.delivery] or delete it"
                        )));
                    }
                    Some(d) => {
                        let s3 = destination.s3();
                        let mut what = Vec::new();
                        let role_arn = format!("arn:aws:iam::{}:role/{role}", self.account);
                        if d.role_arn.as_deref() != Some(role_arn.as_str()) {
                            what.push("role".into());
                        }
                        if d.bucket_arn.as_deref()
                            != Some(format!("arn:aws:s3:::{}", s3.bucket).as_str())
                        {
                            what.push("bucket".into());
                        }
                        if d.prefix.as_deref().unwrap_or("") != s3.prefix
                            || d.error_prefix.as_deref().unwrap_or("") != s3.error_prefix
                        {
                            what.push("prefixes".into());
                        }
                        if d.buffering != (s3.buffer_interval_secs, s3.buffer_size_mb) {
                            what.push(format!(
                                "buffering {} s / {} MiB → {} s / {} MiB",
                                d.buffering.0,
                                d.buffering.1,
                                s3.buffer_interval_secs,
                                s3.buffer_size_mb
                            ));
                        }
                        if d.compression.as_deref() != Some(s3.compression.as_str()) {
                            what.push("compression".into());
                        }
                        if *encrypted && d.key_arn != found.key_arn {
                            what.push("encryption".into());
                        }
                        update_or_unchanged(what)
                    }
                },
            };
        }
        Ok(())
    }

    async fn bucket_owner(&self, name: &str) -> Result<Option<String>> {
        match self.s3.head_bucket().bucket(name).send().await {
            Ok(_) => {}
            Err(e)
                if is_not_found(&e)
                    || e.raw_response().is_some_and(|r| r.status().as_u16() == 404) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(fail("s3:HeadBucket", e)),
        }
        match self.s3.get_bucket_tagging().bucket(name).send().await {
            Ok(t) => Ok(Some(
                t.tag_set()
                    .iter()
                    .find(|t| t.key() == TAG_PIPELINE)
                    .map(|t| t.value().to_owned())
                    .unwrap_or_default(),
            )),
            Err(e) if is_not_found(&e) => Ok(Some(String::new())),
            Err(e) => Err(fail("s3:GetBucketTagging", e)),
        }
    }

    async fn bucket_key(&self, name: &str) -> Result<Option<String>> {
        match self.s3.get_bucket_encryption().bucket(name).send().await {
            Ok(enc) => Ok(enc
                .server_side_encryption_configuration()
                .and_then(|c| c.rules().first())
                .and_then(|r| r.apply_server_side_encryption_by_default())
                .and_then(|d| d.kms_master_key_id())
                .map(str::to_owned)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(fail("s3:GetBucketEncryption", e)),
        }
    }

    async fn stream(&self, name: &str) -> Result<Option<StreamState>> {
        let d = match self
            .kinesis
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
        {
            Ok(d) => d,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(fail("kinesis:DescribeStreamSummary", e)),
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
            .map_err(|e| fail("kinesis:ListTagsForStream", e))?;
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

    async fn role(&self, name: &str) -> Result<Option<(Option<String>, Option<String>)>> {
        let role = match self.iam.get_role().role_name(name).send().await {
            Ok(r) => r,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(fail("iam:GetRole", e)),
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
            .map_err(|e| fail("iam:ListRoleTags", e))?;
        let owner = tags
            .tags()
            .iter()
            .find(|t| t.key() == TAG_PIPELINE)
            .map(|t| t.value().to_owned());
        Ok(Some((owner, trust)))
    }

    async fn delivery(&self, name: &str) -> Result<Option<DeliveryState>> {
        let d = match self
            .firehose
            .describe_delivery_stream()
            .delivery_stream_name(name)
            .send()
            .await
        {
            Ok(d) => d,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(fail("firehose:DescribeDeliveryStream", e)),
        };
        let desc = d.delivery_stream_description();
        let dest = desc.and_then(|d| d.destinations().first());
        let mut state = DeliveryState {
            version: desc.map(|d| d.version_id().to_owned()),
            destination_id: dest.map(|d| d.destination_id().to_owned()),
            active: desc
                .is_some_and(|d| d.delivery_stream_status() == &fh::DeliveryStreamStatus::Active),
            key_arn: desc
                .and_then(|d| d.delivery_stream_encryption_configuration())
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
            state.role_arn = Some(x.role_arn().to_owned());
            state.bucket_arn = Some(x.bucket_arn().to_owned());
            state.prefix = x.prefix().map(str::to_owned);
            state.error_prefix = x.error_output_prefix().map(str::to_owned);
            state.buffering = buffering(x.buffering_hints());
            state.compression = Some(x.compression_format().as_str().to_owned());
        } else if let Some(x) = dest.and_then(|d| {
            d.redshift_destination_description()
                .and_then(|r| r.s3_destination_description())
                .or_else(|| {
                    d.amazonopensearchservice_destination_description()
                        .and_then(|o| o.s3_destination_description())
                })
        }) {
            state.role_arn = Some(x.role_arn().to_owned());
            state.bucket_arn = Some(x.bucket_arn().to_owned());
            state.prefix = x.prefix().map(str::to_owned);
            state.error_prefix = x.error_output_prefix().map(str::to_owned);
            state.buffering = buffering(x.buffering_hints());
            state.compression = Some(x.compression_format().as_str().to_owned());
        }
        let tags = self
            .firehose
            .list_tags_for_delivery_stream()
            .delivery_stream_name(name)
            .send()
            .await
            .map_err(|e| fail("firehose:ListTagsForDeliveryStream", e))?;
        state.owner = tags
            .tags()
            .iter()
            .find(|t| t.key() == TAG_PIPELINE)
            .and_then(|t| t.value())
            .map(str::to_owned);
        Ok(Some(state))
    }

    async fn wait_stream_active(&self, name: &str) -> Result<()> {
        let started = std::time::Instant::now();
        loop {
            if self.stream(name).await?.is_some_and(|s| s.active) {
                return Ok(());
            }
            if started.elapsed() > self.wait {
                return Err(Error::Setup(format!(
                    "Kinesis stream {name} did not become ACTIVE within {} s",
                    self.wait.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn wait_delivery_active(&self, name: &str) -> Result<()> {
        let started = std::time::Instant::now();
        loop {
            if self.delivery(name).await?.is_some_and(|s| s.active) {
                return Ok(());
            }
            if started.elapsed() > self.wait {
                return Err(Error::Setup(format!(
                    "Firehose delivery stream {name} did not become ACTIVE within {} s",
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

fn build_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Setup(format!("{what}: {e}"))
}

/// Creates or updates the pipeline file's resources so that they are as planned. Idempotent:
/// when everything is as planned, nothing is called that changes anything.
pub async fn apply(config: &crate::PipelineConfig) -> Result<ApplyReport> {
    let inputs = config.setup_inputs()?;
    let env = Env::connect(&inputs).await?;
    let mut found = env.discover(&inputs).await?;
    let mut changes = Vec::new();
    let encryption = inputs.section.encryption.unwrap_or(true);
    let alias = super::key_alias(&inputs.pipeline);
    // What the plan looked like before anything was done.
    let mut before = desired(&inputs, &env.account, &env.region, found.key_arn.as_deref())?;
    env.compare(&mut before, &found).await?;

    // The key first: the other resources' policies name it.
    if encryption && found.key_arn.is_none() {
        found.key_arn = Some(env.create_key(&inputs, &alias, &mut changes).await?);
    }
    let mut plan = desired(&inputs, &env.account, &env.region, found.key_arn.as_deref())?;
    env.compare(&mut plan, &found).await?;
    let key = found.key_arn.clone();
    let mut key_policy = None;
    for (r, action) in &plan.resources {
        if matches!(action, Action::Unchanged | Action::External) {
            continue;
        }
        let mut cx = Applying {
            inputs: &inputs,
            key: &key,
            changes: &mut changes,
        };
        match r {
            Planned::Key { policy, .. } => {
                env.enable_rotation(&key, &alias, cx.changes).await?;
                // The key policy names the roles: put once they exist.
                key_policy = Some(policy.clone());
            }
            Planned::Bucket { name, encrypted } => {
                env.apply_bucket(&mut cx, action, name, encrypted).await?;
            }
            Planned::Stream {
                name,
                capacity,
                encrypted,
            } => {
                env.apply_stream(&mut cx, name, capacity, encrypted).await?;
            }
            Planned::Role {
                name,
                purpose,
                trust,
                policy,
            } => {
                env.apply_role(&mut cx, action, name, purpose, trust, policy)
                    .await?;
            }
            Planned::DeliveryStream {
                name,
                role,
                destination,
                encrypted,
            } => {
                let role_arn = format!("arn:aws:iam::{}:role/{role}", env.account);
                if *action == Action::Create {
                    env.create_delivery_stream(
                        &mut cx,
                        name,
                        role,
                        &role_arn,
                        destination,
                        encrypted,
                    )
                    .await?;
                } else {
                    env.update_delivery_stream(
                        &mut cx,
                        action,
                        name,
                        &role_arn,
                        destination,
                        encrypted,
                    )
                    .await?;
                }
            }
        }
    }
    if let (Some(policy), Some(k)) = (key_policy, &key) {
        env.put_key_policy(k, &policy, &alias, &mut changes).await?;
    }
    Ok(ApplyReport {
        plan: before,
        changes,
    })
}

/// What the steps of [`apply`] read (the file's inputs, the key's ARN) and add to (the changes
/// made).
struct Applying<'a> {
    inputs: &'a SetupInputs,
    key: &'a Option<String>,
    changes: &'a mut Vec<String>,
}

/// The steps of [`apply`], one per kind of resource.
impl Env {
    /// Creates the pipeline's key and its alias; the key's ARN.
    async fn create_key(
        &self,
        inputs: &SetupInputs,
        alias: &str,
        changes: &mut Vec<String>,
    ) -> Result<String> {
        let key = self
            .kms
            .create_key()
            .description(format!("rivulet pipeline `{}`", inputs.pipeline))
            .tags(
                aws_sdk_kms::types::Tag::builder()
                    .tag_key(TAG_PIPELINE)
                    .tag_value(&inputs.pipeline)
                    .build()
                    .map_err(|e| build_err("kms tag", e))?,
            )
            .send()
            .await
            .map_err(|e| fail("kms:CreateKey", e))?;
        let arn = key
            .key_metadata()
            .and_then(|m| m.arn())
            .ok_or_else(|| Error::Setup("kms:CreateKey returned no ARN".into()))?
            .to_owned();
        self.kms
            .create_alias()
            .alias_name(alias)
            .target_key_id(&arn)
            .send()
            .await
            .map_err(|e| fail("kms:CreateAlias", e))?;
        changes.push(format!("created KMS key {alias} ({arn})"));
        Ok(arn)
    }

    /// Turns the key's rotation on when it is off.
    async fn enable_rotation(
        &self,
        key: &Option<String>,
        alias: &str,
        changes: &mut Vec<String>,
    ) -> Result<()> {
        let arn = key.as_deref().unwrap_or_default();
        let rotation = self
            .kms
            .get_key_rotation_status()
            .key_id(arn)
            .send()
            .await
            .map_err(|e| fail("kms:GetKeyRotationStatus", e))?;
        if !rotation.key_rotation_enabled() {
            self.kms
                .enable_key_rotation()
                .key_id(arn)
                .send()
                .await
                .map_err(|e| fail("kms:EnableKeyRotation", e))?;
            changes.push(format!("enabled rotation of {alias}"));
        }
        Ok(())
    }

    /// Creates the bucket (tagged) or leaves it, and sets its default encryption to the key.
    async fn apply_bucket(
        &self,
        cx: &mut Applying<'_>,
        action: &Action,
        name: &String,
        encrypted: &bool,
    ) -> Result<()> {
        let Applying {
            inputs,
            key,
            changes,
        } = cx;
        if *action == Action::Create {
            let mut req = self.s3.create_bucket().bucket(name);
            if self.region != "us-east-1" {
                req = req.create_bucket_configuration(
                    aws_sdk_s3::types::CreateBucketConfiguration::builder()
                        .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(
                            self.region.as_str(),
                        ))
                        .build(),
                );
            }
            req.send().await.map_err(|e| fail("s3:CreateBucket", e))?;
            self.s3
                .put_bucket_tagging()
                .bucket(name)
                .tagging(
                    aws_sdk_s3::types::Tagging::builder()
                        .tag_set(
                            aws_sdk_s3::types::Tag::builder()
                                .key(TAG_PIPELINE)
                                .value(&inputs.pipeline)
                                .build()
                                .map_err(|e| build_err("s3 tag", e))?,
                        )
                        .build()
                        .map_err(|e| build_err("s3 tagging", e))?,
                )
                .send()
                .await
                .map_err(|e| fail("s3:PutBucketTagging", e))?;
            changes.push(format!("created S3 bucket {name}"));
        }
        if let (true, Some(k)) = (encrypted, &key) {
            let by_default = aws_sdk_s3::types::ServerSideEncryptionByDefault::builder()
                .sse_algorithm(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
                .kms_master_key_id(k)
                .build()
                .map_err(|e| build_err("s3 encryption", e))?;
            self.s3
                .put_bucket_encryption()
                .bucket(name)
                .server_side_encryption_configuration(
                    aws_sdk_s3::types::ServerSideEncryptionConfiguration::builder()
                        .rules(
                            aws_sdk_s3::types::ServerSideEncryptionRule::builder()
                                .apply_server_side_encryption_by_default(by_default)
                                // No S3 Bucket Key: with one, the encryption context
                                // is the bucket, not the object, and the delivery
                                // roles' per-prefix KMS conditions would never match.
                                .bucket_key_enabled(false)
                                .build(),
                        )
                        .build()
                        .map_err(|e| build_err("s3 encryption", e))?,
                )
                .send()
                .await
                .map_err(|e| fail("s3:PutBucketEncryption", e))?;
            changes.push(format!("set default encryption of {name} to the key"));
        }
        Ok(())
    }

    /// Creates the stream (tagged), or changes its capacity, and encrypts it with the key.
    async fn apply_stream(
        &self,
        cx: &mut Applying<'_>,
        name: &String,
        capacity: &Capacity,
        encrypted: &bool,
    ) -> Result<()> {
        let Applying {
            inputs,
            key,
            changes,
        } = cx;
        let current = self.stream(name).await?;
        match current {
            None => {
                // Tagged in the same call: a stream never exists untagged (it would
                // count as someone else's).
                let mut req = self
                    .kinesis
                    .create_stream()
                    .stream_name(name)
                    .tags(TAG_PIPELINE, &inputs.pipeline);
                req = match capacity {
                    Capacity::Shards(n) => req.shard_count(*n as i32),
                    Capacity::OnDemand => req.stream_mode_details(
                        ks::StreamModeDetails::builder()
                            .stream_mode(ks::StreamMode::OnDemand)
                            .build()
                            .map_err(|e| build_err("stream mode", e))?,
                    ),
                };
                req.send()
                    .await
                    .map_err(|e| fail("kinesis:CreateStream", e))?;
                self.wait_stream_active(name).await?;
                // Emulators may ignore tags given at creation.
                if self.stream(name).await?.and_then(|s| s.owner).is_none() {
                    self.kinesis
                        .add_tags_to_stream()
                        .stream_name(name)
                        .tags(TAG_PIPELINE, &inputs.pipeline)
                        .send()
                        .await
                        .map_err(|e| fail("kinesis:AddTagsToStream", e))?;
                }
                changes.push(format!("created Kinesis stream {name} ({capacity:?})"));
            }
            Some(s) if s.capacity != *capacity => {
                let mode = |m: ks::StreamMode| -> Result<ks::StreamModeDetails> {
                    ks::StreamModeDetails::builder()
                        .stream_mode(m)
                        .build()
                        .map_err(|e| build_err("stream mode", e))
                };
                match capacity {
                    Capacity::Shards(n) => {
                        if s.capacity == Capacity::OnDemand {
                            self.kinesis
                                .update_stream_mode()
                                .stream_arn(&s.arn)
                                .stream_mode_details(mode(ks::StreamMode::Provisioned)?)
                                .send()
                                .await
                                .map_err(|e| fail("kinesis:UpdateStreamMode", e))?;
                            self.wait_stream_active(name).await?;
                        }
                        let now = self.stream(name).await?.map(|s| s.capacity);
                        if now != Some(Capacity::Shards(*n)) {
                            self.kinesis
                                .update_shard_count()
                                .stream_name(name)
                                .target_shard_count(*n as i32)
                                .scaling_type(ks::ScalingType::UniformScaling)
                                .send()
                                .await
                                .map_err(|e| fail("kinesis:UpdateShardCount", e))?;
                        }
                    }
                    Capacity::OnDemand => {
                        self.kinesis
                            .update_stream_mode()
                            .stream_arn(&s.arn)
                            .stream_mode_details(mode(ks::StreamMode::OnDemand)?)
                            .send()
                            .await
                            .map_err(|e| fail("kinesis:UpdateStreamMode", e))?;
                    }
                }
                self.wait_stream_active(name).await?;
                changes.push(format!(
                    "changed Kinesis stream {name}: {:?} → {capacity:?}",
                    s.capacity
                ));
            }
            Some(_) => {}
        }
        if let (true, Some(k)) = (encrypted, &key) {
            let now = self.stream(name).await?;
            if now.as_ref().and_then(|s| s.key.as_ref()) != Some(k) {
                self.kinesis
                    .start_stream_encryption()
                    .stream_name(name)
                    .encryption_type(ks::EncryptionType::Kms)
                    .key_id(k)
                    .send()
                    .await
                    .map_err(|e| fail("kinesis:StartStreamEncryption", e))?;
                self.wait_stream_active(name).await?;
                changes.push(format!("encrypted Kinesis stream {name} with the key"));
            }
        }
        Ok(())
    }

    /// Creates the role (tagged) or updates its trust, and puts its inline policy.
    async fn apply_role(
        &self,
        cx: &mut Applying<'_>,
        action: &Action,
        name: &String,
        purpose: &String,
        trust: &PolicyDocument,
        policy: &PolicyDocument,
    ) -> Result<()> {
        let Applying {
            inputs, changes, ..
        } = cx;
        if *action == Action::Create {
            self.iam
                .create_role()
                .role_name(name)
                .description(purpose)
                .assume_role_policy_document(trust.to_json())
                .tags(
                    aws_sdk_iam::types::Tag::builder()
                        .key(TAG_PIPELINE)
                        .value(&inputs.pipeline)
                        .build()
                        .map_err(|e| build_err("iam tag", e))?,
                )
                .send()
                .await
                .map_err(|e| fail("iam:CreateRole", e))?;
            changes.push(format!("created IAM role {name}"));
        } else {
            self.iam
                .update_assume_role_policy()
                .role_name(name)
                .policy_document(trust.to_json())
                .send()
                .await
                .map_err(|e| fail("iam:UpdateAssumeRolePolicy", e))?;
        }
        self.iam
            .put_role_policy()
            .role_name(name)
            .policy_name("rivulet")
            .policy_document(policy.to_json())
            .send()
            .await
            .map_err(|e| fail("iam:PutRolePolicy", e))?;
        if *action != Action::Create {
            changes.push(format!("updated the policies of IAM role {name}"));
        }
        Ok(())
    }

    /// Creates the delivery stream (tagged, encrypted with the key), once its role can be assumed.
    async fn create_delivery_stream(
        &self,
        cx: &mut Applying<'_>,
        name: &String,
        role: &String,
        role_arn: &str,
        destination: &Destination,
        encrypted: &bool,
    ) -> Result<()> {
        let Applying {
            inputs,
            key,
            changes,
        } = cx;
        let mut req = self
            .firehose
            .create_delivery_stream()
            .delivery_stream_name(name)
            .delivery_stream_type(fh::DeliveryStreamType::DirectPut)
            .tags(
                fh::Tag::builder()
                    .key(TAG_PIPELINE)
                    .value(&inputs.pipeline)
                    .build()
                    .map_err(|e| build_err("firehose tag", e))?,
            );
        req = match destination {
            Destination::S3(_) => req.extended_s3_destination_configuration(extended_s3(
                role_arn,
                destination,
                key.as_deref(),
            )?),
            Destination::Redshift {
                jdbc_url,
                table,
                columns,
                username,
                password_env,
                copy_options,
                ..
            } => {
                let password = std::env::var(password_env).map_err(|_| {
                    Error::config(
                        format!("setup.delivery.{name}.password_env"),
                        format!("the environment variable {password_env} is not set"),
                    )
                })?;
                let mut copy = fh::CopyCommand::builder().data_table_name(table);
                if let Some(c) = columns {
                    copy = copy.data_table_columns(c);
                }
                if let Some(o) = copy_options {
                    copy = copy.copy_options(o);
                }
                req.redshift_destination_configuration(
                    fh::RedshiftDestinationConfiguration::builder()
                        .role_arn(role_arn)
                        .cluster_jdbcurl(jdbc_url)
                        .copy_command(copy.build().map_err(|e| build_err("copy command", e))?)
                        .username(username)
                        .password(password)
                        .s3_configuration(plain_s3(role_arn, destination, key.as_deref())?)
                        .build()
                        .map_err(|e| build_err("redshift destination", e))?,
                )
            }
            Destination::OpenSearch {
                domain_arn,
                index,
                rotation,
                ..
            } => req.amazonopensearchservice_destination_configuration(
                fh::AmazonopensearchserviceDestinationConfiguration::builder()
                    .role_arn(role_arn)
                    .domain_arn(domain_arn)
                    .index_name(index)
                    .index_rotation_period(fh::AmazonopensearchserviceIndexRotationPeriod::from(
                        rotation.as_str(),
                    ))
                    .s3_backup_mode(fh::AmazonopensearchserviceS3BackupMode::FailedDocumentsOnly)
                    .s3_configuration(plain_s3(role_arn, destination, key.as_deref())?)
                    .build()
                    .map_err(|e| build_err("opensearch destination", e))?,
            ),
        };
        if let (true, Some(k)) = (encrypted, &key) {
            req = req.delivery_stream_encryption_configuration_input(
                fh::DeliveryStreamEncryptionConfigurationInput::builder()
                    .key_type(fh::KeyType::CustomerManagedCmk)
                    .key_arn(k)
                    .build()
                    .map_err(|e| build_err("delivery stream encryption", e))?,
            );
        }
        // A role created moments ago may not be assumable yet (IAM is eventually
        // consistent): retried while Firehose says so, up to the wait timeout.
        let started = std::time::Instant::now();
        loop {
            match req.clone().send().await {
                Ok(_) => break,
                Err(e)
                    if e.code() == Some("InvalidArgumentException")
                        && started.elapsed() < self.wait =>
                {
                    tracing::info!("waiting for role {role} to propagate: {e}");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Err(e) => return Err(fail("firehose:CreateDeliveryStream", e)),
            }
        }
        self.wait_delivery_active(name).await?;
        changes.push(format!("created Firehose delivery stream {name}"));
        Ok(())
    }

    /// Updates the delivery stream's destination and encryption.
    async fn update_delivery_stream(
        &self,
        cx: &mut Applying<'_>,
        action: &Action,
        name: &String,
        role_arn: &str,
        destination: &Destination,
        encrypted: &bool,
    ) -> Result<()> {
        let Applying { key, changes, .. } = cx;
        let current = self.delivery(name).await?.unwrap_or_default();
        let s3 = destination.s3();
        let update = fh::ExtendedS3DestinationUpdate::builder()
            .role_arn(role_arn)
            .bucket_arn(format!("arn:aws:s3:::{}", s3.bucket))
            .prefix(&s3.prefix)
            .error_output_prefix(&s3.error_prefix)
            .buffering_hints(hints(s3))
            .compression_format(fh::CompressionFormat::from(s3.compression.as_str()))
            .set_encryption_configuration(kms_config(key.as_deref())?)
            .build();
        let mut req = self
            .firehose
            .update_destination()
            .delivery_stream_name(name)
            .current_delivery_stream_version_id(current.version.unwrap_or_default())
            .destination_id(current.destination_id.unwrap_or_default());
        let s3_update = || -> Result<fh::S3DestinationUpdate> {
            Ok(fh::S3DestinationUpdate::builder()
                .role_arn(role_arn)
                .bucket_arn(format!("arn:aws:s3:::{}", s3.bucket))
                .prefix(&s3.prefix)
                .error_output_prefix(&s3.error_prefix)
                .buffering_hints(hints(s3))
                .compression_format(fh::CompressionFormat::from(s3.compression.as_str()))
                .set_encryption_configuration(kms_config(key.as_deref())?)
                .build())
        };
        req = match destination {
            Destination::S3(_) => req.extended_s3_destination_update(update),
            Destination::Redshift { .. } => req.redshift_destination_update(
                fh::RedshiftDestinationUpdate::builder()
                    .role_arn(role_arn)
                    .s3_update(s3_update()?)
                    .build(),
            ),
            Destination::OpenSearch { .. } => req.amazonopensearchservice_destination_update(
                fh::AmazonopensearchserviceDestinationUpdate::builder()
                    .role_arn(role_arn)
                    .s3_update(s3_update()?)
                    .build(),
            ),
        };
        req.send()
            .await
            .map_err(|e| fail("firehose:UpdateDestination", e))?;
        if let (true, Some(k)) = (encrypted, &key) {
            if current.key_arn.as_deref() != Some(k.as_str()) {
                self.firehose
                    .start_delivery_stream_encryption()
                    .delivery_stream_name(name)
                    .delivery_stream_encryption_configuration_input(
                        fh::DeliveryStreamEncryptionConfigurationInput::builder()
                            .key_type(fh::KeyType::CustomerManagedCmk)
                            .key_arn(k)
                            .build()
                            .map_err(|e| build_err("delivery stream encryption", e))?,
                    )
                    .send()
                    .await
                    .map_err(|e| fail("firehose:StartDeliveryStreamEncryption", e))?;
            }
        }
        changes.push(format!(
            "updated Firehose delivery stream {name}: {}",
            match action {
                Action::Update(w) => w.join(", "),
                _ => String::new(),
            }
        ));
        Ok(())
    }

    /// Puts the key policy (which names the roles), once the new roles are valid principals.
    async fn put_key_policy(
        &self,
        k: &str,
        policy: &PolicyDocument,
        alias: &str,
        changes: &mut Vec<String>,
    ) -> Result<()> {
        // New roles may not be valid principals yet: retried while KMS says so.
        let started = std::time::Instant::now();
        loop {
            match self
                .kms
                .put_key_policy()
                .key_id(k)
                .policy_name("default")
                .policy(policy.to_json())
                .send()
                .await
            {
                Ok(_) => break,
                Err(e)
                    if e.code() == Some("MalformedPolicyDocumentException")
                        && started.elapsed() < self.wait =>
                {
                    tracing::info!("waiting for the key policy's roles to propagate: {e}");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Err(e) => return Err(fail("kms:PutKeyPolicy", e)),
            }
        }
        changes.push(format!("set the key policy of {alias}"));
        Ok(())
    }
}

fn hints(s3: &super::S3Destination) -> fh::BufferingHints {
    fh::BufferingHints::builder()
        .interval_in_seconds(s3.buffer_interval_secs as i32)
        .size_in_mbs(s3.buffer_size_mb as i32)
        .build()
}

fn kms_config(key: Option<&str>) -> Result<Option<fh::EncryptionConfiguration>> {
    let Some(k) = key else { return Ok(None) };
    Ok(Some(
        fh::EncryptionConfiguration::builder()
            .kms_encryption_config(
                fh::KmsEncryptionConfig::builder()
                    .awskms_key_arn(k)
                    .build()
                    .map_err(|e| build_err("kms encryption config", e))?,
            )
            .build(),
    ))
}

fn extended_s3(
    role_arn: &str,
    d: &Destination,
    key: Option<&str>,
) -> Result<fh::ExtendedS3DestinationConfiguration> {
    let s3 = d.s3();
    fh::ExtendedS3DestinationConfiguration::builder()
        .role_arn(role_arn)
        .bucket_arn(format!("arn:aws:s3:::{}", s3.bucket))
        .prefix(&s3.prefix)
        .error_output_prefix(&s3.error_prefix)
        .buffering_hints(hints(s3))
        .compression_format(fh::CompressionFormat::from(s3.compression.as_str()))
        .set_encryption_configuration(kms_config(key)?)
        .build()
        .map_err(|e| build_err("s3 destination", e))
}

fn plain_s3(
    role_arn: &str,
    d: &Destination,
    key: Option<&str>,
) -> Result<fh::S3DestinationConfiguration> {
    let s3 = d.s3();
    fh::S3DestinationConfiguration::builder()
        .role_arn(role_arn)
        .bucket_arn(format!("arn:aws:s3:::{}", s3.bucket))
        .prefix(&s3.prefix)
        .error_output_prefix(&s3.error_prefix)
        .buffering_hints(hints(s3))
        .compression_format(fh::CompressionFormat::from(s3.compression.as_str()))
        .set_encryption_configuration(kms_config(key)?)
        .build()
        .map_err(|e| build_err("s3 configuration", e))
}

/// Removes what rivulet created for the pipeline file (everything tagged with its name), in the
/// reverse order of creation. A stream or bucket that existed before is never touched; a bucket
/// that still holds objects is kept (and said so), since deleting it would delete data. The key
/// is scheduled for deletion (7 days, the shortest KMS allows) and its alias removed.
pub async fn destroy(config: &crate::PipelineConfig) -> Result<ApplyReport> {
    let inputs = config.setup_inputs()?;
    let env = Env::connect(&inputs).await?;
    let found = env.discover(&inputs).await?;
    let mut plan = desired(&inputs, &env.account, &env.region, found.key_arn.as_deref())?;
    env.compare(&mut plan, &found).await?;
    let mut changes = Vec::new();
    let p = inputs.pipeline.as_str();
    for (r, _) in plan.resources.iter().rev() {
        match r {
            Planned::DeliveryStream { name, .. } => {
                if env
                    .delivery(name)
                    .await?
                    .is_some_and(|d| d.owner.as_deref() == Some(p))
                {
                    env.firehose
                        .delete_delivery_stream()
                        .delivery_stream_name(name)
                        .send()
                        .await
                        .map_err(|e| fail("firehose:DeleteDeliveryStream", e))?;
                    changes.push(format!("deleted Firehose delivery stream {name}"));
                }
            }
            Planned::Role { name, .. } => {
                if env
                    .role(name)
                    .await?
                    .is_some_and(|(o, _)| o.as_deref() == Some(p))
                {
                    let policies = env
                        .iam
                        .list_role_policies()
                        .role_name(name)
                        .send()
                        .await
                        .map_err(|e| fail("iam:ListRolePolicies", e))?;
                    for pn in policies.policy_names() {
                        env.iam
                            .delete_role_policy()
                            .role_name(name)
                            .policy_name(pn)
                            .send()
                            .await
                            .map_err(|e| fail("iam:DeleteRolePolicy", e))?;
                    }
                    env.iam
                        .delete_role()
                        .role_name(name)
                        .send()
                        .await
                        .map_err(|e| fail("iam:DeleteRole", e))?;
                    changes.push(format!("deleted IAM role {name}"));
                }
            }
            Planned::Stream { name, .. } => {
                if env
                    .stream(name)
                    .await?
                    .is_some_and(|s| s.owner.as_deref() == Some(p))
                {
                    env.kinesis
                        .delete_stream()
                        .stream_name(name)
                        .enforce_consumer_deletion(true)
                        .send()
                        .await
                        .map_err(|e| fail("kinesis:DeleteStream", e))?;
                    changes.push(format!("deleted Kinesis stream {name}"));
                }
            }
            Planned::Bucket { name, .. } => {
                if env.bucket_owner(name).await?.as_deref() == Some(p) {
                    let objects = env
                        .s3
                        .list_objects_v2()
                        .bucket(name)
                        .max_keys(1)
                        .send()
                        .await
                        .map_err(|e| fail("s3:ListObjectsV2", e))?;
                    if objects.key_count().unwrap_or(0) > 0 {
                        changes.push(format!(
                            "kept S3 bucket {name}: it holds objects (empty it, then destroy \
                             again, to delete it)"
                        ));
                    } else {
                        env.s3
                            .delete_bucket()
                            .bucket(name)
                            .send()
                            .await
                            .map_err(|e| fail("s3:DeleteBucket", e))?;
                        changes.push(format!("deleted S3 bucket {name}"));
                    }
                }
            }
            Planned::Key { alias, .. } => {
                let kept_data = changes.iter().any(|c| c.starts_with("kept S3 bucket"));
                if found.key_arn.is_some() && (kept_data || super::envelope_with_setup_key(&inputs))
                {
                    changes.push(format!(
                        "kept KMS key {alias}: {}",
                        if kept_data {
                            "a kept bucket's objects are encrypted with it"
                        } else {
                            "sinks sealed output with it (envelope encryption), which only it \
                             can open; schedule its deletion yourself when that output is gone"
                        }
                    ));
                    continue;
                }
                if let Some(arn) = &found.key_arn {
                    let tags = env
                        .kms
                        .list_resource_tags()
                        .key_id(arn)
                        .send()
                        .await
                        .map_err(|e| fail("kms:ListResourceTags", e))?;
                    let ours = tags
                        .tags()
                        .iter()
                        .any(|t| t.tag_key() == TAG_PIPELINE && t.tag_value() == p);
                    if ours {
                        env.kms
                            .delete_alias()
                            .alias_name(alias)
                            .send()
                            .await
                            .map_err(|e| fail("kms:DeleteAlias", e))?;
                        // By key id, which every KMS implementation takes (moto refuses ARNs here).
                        let key_id = arn.rsplit('/').next().unwrap_or(arn);
                        env.kms
                            .schedule_key_deletion()
                            .key_id(key_id)
                            .pending_window_in_days(7)
                            .send()
                            .await
                            .map_err(|e| fail("kms:ScheduleKeyDeletion", e))?;
                        changes.push(format!(
                            "scheduled KMS key {arn} for deletion in 7 days and removed {alias}"
                        ));
                    }
                }
            }
        }
    }
    Ok(ApplyReport { plan, changes })
}

#[cfg(test)]
mod tests {
    #[test]
    fn url_decoding() {
        assert_eq!(super::url_decode("%7B%22a%22%3A1%7D"), "{\"a\":1}");
        assert_eq!(super::url_decode("100%"), "100%");
    }
}
