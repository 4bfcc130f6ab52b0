//! Creating and updating: [`apply`] and its steps, one per kind of resource, and the Firehose
//! request parts they build.

use std::time::Duration;

use aws_sdk_firehose::operation::create_delivery_stream::builders::CreateDeliveryStreamFluentBuilder;
use aws_sdk_firehose::types as fh;
use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::types as ks;

use super::{build_err, fail, ApplyReport, Call, Env, StreamState};
use crate::setup::{
    Action, Capacity, Destination, Planned, PolicyDocument, SetupInputs, TAG_PIPELINE,
};
use crate::{Error, Result};

/// Sets the role, bucket, prefixes, buffering, compression and encryption of a Firehose S3
/// configuration or update builder (four builder types with the same setters and no trait in
/// common). Evaluates to the builder; `?` on the key's configuration.
macro_rules! with_s3_settings {
    ($builder:expr, $role_arn:expr, $s3:expr, $key:expr) => {
        $builder
            .role_arn($role_arn)
            .bucket_arn(format!("arn:aws:s3:::{}", $s3.bucket))
            .prefix(&$s3.prefix)
            .error_output_prefix(&$s3.error_prefix)
            .buffering_hints(hints($s3))
            .compression_format(fh::CompressionFormat::from($s3.compression.as_str()))
            .set_encryption_configuration(kms_config($key)?)
    };
}

/// Creates or updates the pipeline file's resources so that they are as planned. Idempotent:
/// when everything is as planned, nothing is called that changes anything.
pub async fn apply(config: &crate::PipelineConfig) -> Result<ApplyReport> {
    let inputs = config.setup_inputs()?;
    let env = Env::connect(&inputs).await?;
    let mut found = env.discover(&inputs).await?;
    let mut changes = Vec::new();
    let encryption = inputs.section.encryption.unwrap_or(true);
    let alias = crate::setup::key_alias(&inputs.pipeline);
    // What the plan looked like before anything was done.
    let before = env.plan(&inputs, &found).await?;

    // The key first: the other resources' policies name it.
    if encryption && found.key_arn.is_none() {
        found.key_arn = Some(env.create_key(&inputs, &alias, &mut changes).await?);
    }
    let plan = env.plan(&inputs, &found).await?;
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
                let role_arn = env.role_arn(role);
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
            .or_fail("kms:CreateKey")?;
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
            .or_fail("kms:CreateAlias")?;
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
        if !self.rotation_enabled(arn).await? {
            self.kms
                .enable_key_rotation()
                .key_id(arn)
                .send()
                .await
                .or_fail("kms:EnableKeyRotation")?;
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
        if *action == Action::Create {
            self.create_bucket(&cx.inputs.pipeline, name).await?;
            cx.changes.push(format!("created S3 bucket {name}"));
        }
        if let (true, Some(k)) = (encrypted, cx.key) {
            self.encrypt_bucket(name, k).await?;
            cx.changes
                .push(format!("set default encryption of {name} to the key"));
        }
        Ok(())
    }

    /// Creates the bucket in this region and tags it with the pipeline's name.
    async fn create_bucket(&self, pipeline: &str, name: &str) -> Result<()> {
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
        req.send().await.or_fail("s3:CreateBucket")?;
        self.s3
            .put_bucket_tagging()
            .bucket(name)
            .tagging(
                aws_sdk_s3::types::Tagging::builder()
                    .tag_set(
                        aws_sdk_s3::types::Tag::builder()
                            .key(TAG_PIPELINE)
                            .value(pipeline)
                            .build()
                            .map_err(|e| build_err("s3 tag", e))?,
                    )
                    .build()
                    .map_err(|e| build_err("s3 tagging", e))?,
            )
            .send()
            .await
            .or_fail("s3:PutBucketTagging")?;
        Ok(())
    }

    /// Sets the bucket's default encryption to the key.
    async fn encrypt_bucket(&self, name: &str, key: &str) -> Result<()> {
        let by_default = aws_sdk_s3::types::ServerSideEncryptionByDefault::builder()
            .sse_algorithm(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
            .kms_master_key_id(key)
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
            .or_fail("s3:PutBucketEncryption")?;
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
        match self.stream(name).await? {
            None => {
                self.create_stream(&cx.inputs.pipeline, name, capacity)
                    .await?;
                cx.changes
                    .push(format!("created Kinesis stream {name} ({capacity:?})"));
            }
            Some(s) if s.capacity != *capacity => {
                self.change_capacity(name, &s, capacity).await?;
                cx.changes.push(format!(
                    "changed Kinesis stream {name}: {:?} → {capacity:?}",
                    s.capacity
                ));
            }
            Some(_) => {}
        }
        if let (true, Some(k)) = (encrypted, cx.key) {
            let now = self.stream(name).await?;
            if now.as_ref().and_then(|s| s.key.as_ref()) != Some(k) {
                self.encrypt_stream(name, k).await?;
                cx.changes
                    .push(format!("encrypted Kinesis stream {name} with the key"));
            }
        }
        Ok(())
    }

    /// Creates the stream, tagged, and waits until it is active.
    async fn create_stream(&self, pipeline: &str, name: &str, capacity: &Capacity) -> Result<()> {
        // Tagged in the same call: a stream never exists untagged (it would
        // count as someone else's).
        let mut req = self
            .kinesis
            .create_stream()
            .stream_name(name)
            .tags(TAG_PIPELINE, pipeline);
        req = match capacity {
            Capacity::Shards(n) => req.shard_count(*n as i32),
            Capacity::OnDemand => req.stream_mode_details(stream_mode(ks::StreamMode::OnDemand)?),
        };
        req.send().await.or_fail("kinesis:CreateStream")?;
        self.wait_stream_active(name).await?;
        // Emulators may ignore tags given at creation.
        if self.stream(name).await?.and_then(|s| s.owner).is_none() {
            self.kinesis
                .add_tags_to_stream()
                .stream_name(name)
                .tags(TAG_PIPELINE, pipeline)
                .send()
                .await
                .or_fail("kinesis:AddTagsToStream")?;
        }
        Ok(())
    }

    /// Takes the stream from its current capacity to `capacity`, and waits until it is active.
    async fn change_capacity(
        &self,
        name: &str,
        current: &StreamState,
        capacity: &Capacity,
    ) -> Result<()> {
        match capacity {
            Capacity::Shards(n) => {
                if current.capacity == Capacity::OnDemand {
                    self.set_stream_mode(&current.arn, ks::StreamMode::Provisioned)
                        .await?;
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
                        .or_fail("kinesis:UpdateShardCount")?;
                }
            }
            Capacity::OnDemand => {
                self.set_stream_mode(&current.arn, ks::StreamMode::OnDemand)
                    .await?;
            }
        }
        self.wait_stream_active(name).await
    }

    async fn set_stream_mode(&self, arn: &str, mode: ks::StreamMode) -> Result<()> {
        self.kinesis
            .update_stream_mode()
            .stream_arn(arn)
            .stream_mode_details(stream_mode(mode)?)
            .send()
            .await
            .or_fail("kinesis:UpdateStreamMode")?;
        Ok(())
    }

    /// Starts the stream's server-side encryption with the key, and waits until it is active.
    async fn encrypt_stream(&self, name: &str, key: &str) -> Result<()> {
        self.kinesis
            .start_stream_encryption()
            .stream_name(name)
            .encryption_type(ks::EncryptionType::Kms)
            .key_id(key)
            .send()
            .await
            .or_fail("kinesis:StartStreamEncryption")?;
        self.wait_stream_active(name).await
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
                .or_fail("iam:CreateRole")?;
            changes.push(format!("created IAM role {name}"));
        } else {
            self.iam
                .update_assume_role_policy()
                .role_name(name)
                .policy_document(trust.to_json())
                .send()
                .await
                .or_fail("iam:UpdateAssumeRolePolicy")?;
        }
        self.iam
            .put_role_policy()
            .role_name(name)
            .policy_name("rivulet")
            .policy_document(policy.to_json())
            .send()
            .await
            .or_fail("iam:PutRolePolicy")?;
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
        req = with_destination(req, name, role_arn, destination, key.as_deref())?;
        if let (true, Some(k)) = (encrypted, &key) {
            req = req.delivery_stream_encryption_configuration_input(delivery_encryption(k)?);
        }
        // A role created moments ago may not be assumable yet (IAM is eventually
        // consistent): retried while Firehose says so, up to the wait timeout.
        self.retry_while_propagating(
            "InvalidArgumentException",
            &format!("role {role}"),
            "firehose:CreateDeliveryStream",
            async || req.clone().send().await,
        )
        .await?;
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
        let update = with_s3_settings!(
            fh::ExtendedS3DestinationUpdate::builder(),
            role_arn,
            s3,
            key.as_deref()
        )
        .build();
        let mut req = self
            .firehose
            .update_destination()
            .delivery_stream_name(name)
            .current_delivery_stream_version_id(current.version.unwrap_or_default())
            .destination_id(current.destination_id.unwrap_or_default());
        let s3_update = || -> Result<fh::S3DestinationUpdate> {
            Ok(with_s3_settings!(
                fh::S3DestinationUpdate::builder(),
                role_arn,
                s3,
                key.as_deref()
            )
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
        req.send().await.or_fail("firehose:UpdateDestination")?;
        if let (true, Some(k)) = (encrypted, &key) {
            if current.key_arn.as_deref() != Some(k.as_str()) {
                self.firehose
                    .start_delivery_stream_encryption()
                    .delivery_stream_name(name)
                    .delivery_stream_encryption_configuration_input(delivery_encryption(k)?)
                    .send()
                    .await
                    .or_fail("firehose:StartDeliveryStreamEncryption")?;
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
        self.retry_while_propagating(
            "MalformedPolicyDocumentException",
            "the key policy's roles",
            "kms:PutKeyPolicy",
            async || {
                self.kms
                    .put_key_policy()
                    .key_id(k)
                    .policy_name("default")
                    .policy(policy.to_json())
                    .send()
                    .await
            },
        )
        .await?;
        changes.push(format!("set the key policy of {alias}"));
        Ok(())
    }

    /// Sends until AWS stops answering `code` (what it says of an IAM principal it does not know
    /// yet, `waiting_for`), up to the wait timeout; any other failure is reported as `call`'s.
    async fn retry_while_propagating<T, E>(
        &self,
        code: &str,
        waiting_for: &str,
        call: &str,
        send: impl AsyncFn() -> std::result::Result<T, E>,
    ) -> Result<T>
    where
        E: ProvideErrorMetadata + std::error::Error,
    {
        let started = std::time::Instant::now();
        loop {
            match send().await {
                Ok(output) => return Ok(output),
                Err(e) if e.code() == Some(code) && started.elapsed() < self.wait => {
                    tracing::info!("waiting for {waiting_for} to propagate: {e}");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Err(e) => return Err(fail(call, e)),
            }
        }
    }
}

fn stream_mode(mode: ks::StreamMode) -> Result<ks::StreamModeDetails> {
    ks::StreamModeDetails::builder()
        .stream_mode(mode)
        .build()
        .map_err(|e| build_err("stream mode", e))
}

fn delivery_encryption(key: &str) -> Result<fh::DeliveryStreamEncryptionConfigurationInput> {
    fh::DeliveryStreamEncryptionConfigurationInput::builder()
        .key_type(fh::KeyType::CustomerManagedCmk)
        .key_arn(key)
        .build()
        .map_err(|e| build_err("delivery stream encryption", e))
}

/// The create request with its destination's configuration; the Redshift password is read from
/// its environment variable here.
fn with_destination(
    req: CreateDeliveryStreamFluentBuilder,
    name: &str,
    role_arn: &str,
    destination: &Destination,
    key: Option<&str>,
) -> Result<CreateDeliveryStreamFluentBuilder> {
    Ok(match destination {
        Destination::S3(_) => {
            req.extended_s3_destination_configuration(extended_s3(role_arn, destination, key)?)
        }
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
                    .s3_configuration(plain_s3(role_arn, destination, key)?)
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
                .s3_configuration(plain_s3(role_arn, destination, key)?)
                .build()
                .map_err(|e| build_err("opensearch destination", e))?,
        ),
    })
}

fn hints(s3: &crate::setup::S3Destination) -> fh::BufferingHints {
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
    with_s3_settings!(
        fh::ExtendedS3DestinationConfiguration::builder(),
        role_arn,
        s3,
        key
    )
    .build()
    .map_err(|e| build_err("s3 destination", e))
}

fn plain_s3(
    role_arn: &str,
    d: &Destination,
    key: Option<&str>,
) -> Result<fh::S3DestinationConfiguration> {
    let s3 = d.s3();
    with_s3_settings!(fh::S3DestinationConfiguration::builder(), role_arn, s3, key)
        .build()
        .map_err(|e| build_err("s3 configuration", e))
}
