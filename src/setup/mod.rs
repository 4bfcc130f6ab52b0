//! Provisioning of a pipeline's AWS resources (cargo feature `setup`): the source stream, Kinesis
//! output streams, Firehose delivery streams (S3, Redshift or OpenSearch, with the raw-data copy),
//! the bucket they deliver to, a KMS key with rotation, and least-privilege IAM roles.
//!
//! Everything is derived from the pipeline file (its source, sinks, raw copy and error output)
//! and its `[setup]` table, in three steps:
//!
//! - [`Plan::new`] reads what exists and says what would be created, changed or left alone, with
//!   every policy document;
//! - [`apply`] makes it so, idempotently: a second apply changes nothing, and a changed file
//!   updates only what differs;
//! - [`destroy`] removes what rivulet created (everything it creates carries the tag
//!   `rivulet:pipeline`), and never a stream or bucket that existed before.
//!
//! [`cloudformation`] writes the same resources as a CloudFormation template.
//!
//! # Roles
//! The original solution had an analytics role, a delivery role per destination, a raw-data
//! delivery role, a raw-data reader role and a metrics role. Here:
//! - the **runtime role** is what the application embedding rivulet runs as: it reads the source
//!   stream, writes the sinks (and the raw copy: the original's reader role), and uses the key. It
//!   replaces the analytics role, since the SQL now runs in the application;
//! - a **delivery role** per Firehose delivery stream (the raw-data one included), trusted by
//!   Firehose for this account only (`sts:ExternalId`, the account Firehose acts for);
//! - no metrics role: rivulet sends no metrics anywhere.
//!
//! Every statement names specific actions on specific ARNs. The only `Resource: "*"` are in the
//! key policy, where `*` means the key itself (AWS requires it). A key policy statement naming a
//! role allows on its own, so each carries the conditions of the role's IAM statement on the key.
//! [`policy::lint`] checks every generated document.

mod aws;
mod cfn;
pub mod policy;

use std::collections::BTreeMap;

pub use aws::{apply, destroy, ApplyReport};
pub use cfn::cloudformation;
use policy::{arn, DocumentKind, PolicyDocument, Principal, Resource, Statement};

pub(crate) use crate::config::{DeliverySection, SetupInputs};
use crate::{Error, Result};

/// Tag key on everything rivulet creates: the pipeline's name.
pub const TAG_PIPELINE: &str = "rivulet:pipeline";

/// What the plan does with a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// It does not exist: apply creates it.
    Create,
    /// It exists (rivulet created it) and differs: apply changes what is listed.
    Update(Vec<String>),
    /// It exists as planned.
    Unchanged,
    /// It exists and rivulet did not create it: used as it is, never changed or deleted.
    External,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Create => f.write_str("create"),
            Action::Update(what) => write!(f, "update ({})", what.join(", ")),
            Action::Unchanged => f.write_str("unchanged"),
            Action::External => f.write_str("exists, not managed by rivulet: left alone"),
        }
    }
}

/// Capacity of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capacity {
    /// Provisioned with this many shards.
    Shards(u32),
    /// On-demand.
    OnDemand,
}

/// A Firehose destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// S3: objects under `prefix`, failed records under `error_prefix`.
    S3(S3Destination),
    /// Redshift, loaded with COPY from an S3 staging prefix.
    Redshift {
        /// `jdbc:redshift://…`.
        jdbc_url: String,
        /// Target table.
        table: String,
        /// Column list of the COPY, if any.
        columns: Option<String>,
        /// Database user.
        username: String,
        /// Environment variable holding the password at apply time.
        password_env: String,
        /// Extra COPY options.
        copy_options: Option<String>,
        /// The S3 staging area (and backup).
        staging: S3Destination,
    },
    /// OpenSearch, with failed documents backed up to S3.
    OpenSearch {
        /// The domain's ARN.
        domain_arn: String,
        /// The index.
        index: String,
        /// Index rotation.
        rotation: String,
        /// Where failed documents go.
        backup: S3Destination,
    },
}

impl Destination {
    /// The S3 part every destination has (the destination, its staging area or its backup).
    pub fn s3(&self) -> &S3Destination {
        match self {
            Destination::S3(s)
            | Destination::Redshift { staging: s, .. }
            | Destination::OpenSearch { backup: s, .. } => s,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Destination::S3(_) => "s3",
            Destination::Redshift { .. } => "redshift",
            Destination::OpenSearch { .. } => "opensearch",
        }
    }
}

/// The S3 settings of a delivery stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Destination {
    /// Bucket name.
    pub bucket: String,
    /// Object prefix.
    pub prefix: String,
    /// Prefix of records Firehose could not deliver or transform.
    pub error_prefix: String,
    /// Buffering interval, seconds.
    pub buffer_interval_secs: u32,
    /// Buffering size, MiB.
    pub buffer_size_mb: u32,
    /// `UNCOMPRESSED`, `GZIP`, `ZIP`, `Snappy` or `HADOOP_SNAPPY`.
    pub compression: String,
}

/// One planned resource.
#[derive(Debug, Clone, PartialEq)]
pub enum Planned {
    /// The KMS key (symmetric, rotation on), found by its alias.
    Key {
        /// `alias/rivulet-<pipeline>`.
        alias: String,
        /// Its key policy.
        policy: PolicyDocument,
    },
    /// A bucket.
    Bucket {
        /// Name.
        name: String,
        /// Default encryption with the key.
        encrypted: bool,
    },
    /// A Kinesis stream.
    Stream {
        /// Name.
        name: String,
        /// Shards or on-demand.
        capacity: Capacity,
        /// Server-side encryption with the key.
        encrypted: bool,
    },
    /// An IAM role with one inline policy.
    Role {
        /// Name.
        name: String,
        /// What it is for.
        purpose: String,
        /// Who may assume it.
        trust: PolicyDocument,
        /// What it may do (inline policy `rivulet`).
        policy: PolicyDocument,
    },
    /// A Firehose delivery stream (Direct PUT).
    DeliveryStream {
        /// Name.
        name: String,
        /// The role Firehose assumes.
        role: String,
        /// Where it delivers.
        destination: Destination,
        /// SSE with the key.
        encrypted: bool,
    },
}

impl Planned {
    /// `kind name`, for listings.
    pub fn label(&self) -> String {
        match self {
            Planned::Key { alias, .. } => format!("KMS key {alias}"),
            Planned::Bucket { name, .. } => format!("S3 bucket {name}"),
            Planned::Stream { name, .. } => format!("Kinesis stream {name}"),
            Planned::Role { name, .. } => format!("IAM role {name}"),
            Planned::DeliveryStream { name, .. } => format!("Firehose delivery stream {name}"),
        }
    }
}

/// The resources of a pipeline, each with what apply would do to it.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The pipeline's name.
    pub pipeline: String,
    /// AWS account.
    pub account: String,
    /// Region.
    pub region: String,
    /// In the order apply creates them.
    pub resources: Vec<(Planned, Action)>,
    /// Things the user should know (keys rivulet does not manage, …).
    pub notes: Vec<String>,
    key_arn: Option<String>,
}

impl Plan {
    /// Reads what exists in the account and plans the pipeline file's resources.
    pub async fn new(config: &crate::PipelineConfig) -> Result<Self> {
        let inputs = config.setup_inputs()?;
        let env = aws::Env::connect(&inputs).await?;
        let found = env.discover(&inputs).await?;
        env.plan(&inputs, &found).await
    }

    /// The plan without reading anything from AWS (no credentials needed): every resource as if
    /// it were to be created, for [`cloudformation`]. The account and region are placeholders
    /// there, which the template replaces with the stack's own.
    pub fn offline(config: &crate::PipelineConfig) -> Result<Self> {
        let inputs = config.setup_inputs()?;
        let mut plan = desired(&inputs, OFFLINE_ACCOUNT, OFFLINE_REGION, None)?;
        plan.notes.push(
            "made without reading the account: a stream or bucket that already exists must be \
             taken out of the template (or imported into the stack)"
                .into(),
        );
        Ok(plan)
    }

    /// The key's ARN, when the key exists.
    pub fn key_arn(&self) -> Option<String> {
        self.key_arn.clone()
    }

    /// Whether apply would change anything.
    pub fn has_changes(&self) -> bool {
        self.resources
            .iter()
            .any(|(_, a)| matches!(a, Action::Create | Action::Update(_)))
    }

    /// A readable listing, with every policy pretty-printed.
    pub fn render(&self) -> String {
        let mut out = format!(
            "pipeline `{}` in account {} ({}):\n",
            self.pipeline, self.account, self.region
        );
        for (r, a) in &self.resources {
            out.push_str(&format!("  {:<60} {a}\n", r.label()));
        }
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        for (r, _) in &self.resources {
            match r {
                Planned::Role {
                    name,
                    purpose,
                    trust,
                    policy,
                } => {
                    out.push_str(&format!(
                        "\nrole {name} ({purpose})\ntrust policy:\n{}\npolicy `rivulet`:\n{}\n",
                        trust.to_json_pretty(),
                        policy.to_json_pretty()
                    ));
                }
                Planned::Key { alias, policy } => {
                    out.push_str(&format!(
                        "\nkey policy of {alias}:\n{}\n",
                        policy.to_json_pretty()
                    ));
                }
                _ => {}
            }
        }
        out
    }
}

/// Whether a sink seals its output with the setup's key (its `encryption.kms_key_id` is the
/// setup key's alias).
fn envelope_with_setup_key(inputs: &SetupInputs) -> bool {
    let alias = key_alias(&inputs.pipeline);
    inputs.envelope_keys.contains(&alias)
}

/// The key ids sinks seal their output with that rivulet does not manage.
fn other_keys(inputs: &SetupInputs) -> impl Iterator<Item = &String> {
    let alias = key_alias(&inputs.pipeline);
    inputs.envelope_keys.iter().filter(move |k| **k != alias)
}

/// The setup key's alias for `pipeline`.
pub fn key_alias(pipeline: &str) -> String {
    format!("alias/rivulet-{}", sanitize(pipeline, 200))
}

/// `s` restricted to the characters IAM and KMS names take, at most `max` long (with a digest of
/// the whole when cut, so that names stay distinct).
fn sanitize(s: &str, max: usize) -> String {
    let clean: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if clean.len() <= max {
        return clean;
    }
    use md5::Digest as _;
    let digest = md5::Md5::digest(s.as_bytes());
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{hex}", &clean[..max - 9])
}

/// Role names: `rivulet-<pipeline>-<what>`, at most 64 characters.
fn role_name(pipeline: &str, what: &str) -> String {
    sanitize(&format!("rivulet-{pipeline}-{what}"), 64)
}

/// ARN builders for one account and region.
#[derive(Debug, Clone)]
struct Arns<'a> {
    account: &'a str,
    region: &'a str,
}

impl Arns<'_> {
    fn stream(&self, name: &str) -> String {
        format!(
            "arn:aws:kinesis:{}:{}:stream/{name}",
            self.region, self.account
        )
    }
    fn delivery(&self, name: &str) -> String {
        format!(
            "arn:aws:firehose:{}:{}:deliverystream/{name}",
            self.region, self.account
        )
    }
    fn role(&self, name: &str) -> String {
        format!("arn:aws:iam::{}:role/{name}", self.account)
    }
    fn root(&self) -> String {
        format!("arn:aws:iam::{}:root", self.account)
    }
}

/// The account and region of an offline plan.
const OFFLINE_ACCOUNT: &str = "ACCOUNT";
const OFFLINE_REGION: &str = "REGION";

/// The key id in the key's ARN before the key exists (apply creates the key first, then plans
/// again with its real ARN).
const KEY_PENDING: &str = "key/created-by-apply";

/// The resources the inputs call for, with their policies, all planned as [`Action::Create`].
pub(crate) fn desired(
    inputs: &SetupInputs,
    account: &str,
    region: &str,
    key_arn: Option<&str>,
) -> Result<Plan> {
    let arns = Arns { account, region };
    let p = &inputs.pipeline;
    let encryption = inputs.section.encryption.unwrap_or(true);
    let key = key_arn
        .map(str::to_owned)
        .unwrap_or_else(|| format!("arn:aws:kms:{region}:{account}:{KEY_PENDING}"));
    let key_in_policies = encryption.then_some(&key);

    let all_deliveries = delivery_streams(inputs);
    check_inputs(inputs, region, &all_deliveries)?;
    let buckets = buckets(inputs);
    let streams = streams(inputs, encryption);
    let (delivery_roles, deliveries) =
        delivery_resources(inputs, &arns, &all_deliveries, key_in_policies)?;
    let runtime_role = runtime_role(&arns, inputs, key_in_policies);

    let mut resources: Vec<Planned> = Vec::new();
    if encryption {
        resources.push(Planned::Key {
            alias: key_alias(p),
            policy: key_policy(&arns, delivery_roles.iter().chain([&runtime_role]), &key),
        });
    }
    for b in buckets {
        resources.push(Planned::Bucket {
            name: b,
            encrypted: encryption,
        });
    }
    resources.extend(streams);
    resources.extend(delivery_roles);
    resources.push(runtime_role);
    resources.extend(deliveries);

    let notes = other_keys(inputs)
        .map(|k| {
            format!(
                "a sink encrypts with key `{k}`, which rivulet does not manage: the runtime role \
                 is not granted it; grant kms:GenerateDataKey and kms:Decrypt on it yourself"
            )
        })
        .collect();
    lint_documents(&resources)?;
    Ok(Plan {
        pipeline: p.clone(),
        account: account.to_owned(),
        region: region.to_owned(),
        resources: resources.into_iter().map(|r| (r, Action::Create)).collect(),
        notes,
        key_arn: key_arn.map(str::to_owned),
    })
}

/// Every delivery stream the pipeline writes to, with whether it is the raw-data copy's (last).
fn delivery_streams(inputs: &SetupInputs) -> Vec<(&String, bool)> {
    inputs
        .deliveries
        .iter()
        .filter(|d| inputs.raw_delivery.as_ref() != Some(*d))
        .map(|d| (d, false))
        .chain(inputs.raw_delivery.iter().map(|d| (d, true)))
        .collect()
}

/// Refuses a `[setup]` table the pipeline cannot be planned from.
fn check_inputs(
    inputs: &SetupInputs,
    region: &str,
    all_deliveries: &[(&String, bool)],
) -> Result<()> {
    let s = &inputs.section;
    if region.is_empty() {
        return Err(Error::config(
            "setup.region",
            "no AWS region: set it here, on the source, or in AWS_REGION",
        ));
    }
    for name in s.delivery.keys() {
        if !all_deliveries.iter().any(|(d, _)| *d == name) {
            return Err(Error::config(
                format!("setup.delivery.{name}"),
                "no firehose sink, raw copy or error output delivers to this delivery stream",
            ));
        }
    }
    if !all_deliveries.is_empty() && s.bucket.is_none() {
        return Err(Error::config(
            "setup.bucket",
            "the pipeline writes to Firehose: name the bucket the delivery streams deliver to",
        ));
    }
    Ok(())
}

/// The delivery bucket and the S3 sinks' buckets, each once.
fn buckets(inputs: &SetupInputs) -> Vec<String> {
    let mut buckets: Vec<String> = Vec::new();
    if let Some(b) = &inputs.section.bucket {
        buckets.push(b.clone());
    }
    for (b, _) in &inputs.s3_sinks {
        if !buckets.contains(b) {
            buckets.push(b.clone());
        }
    }
    buckets
}

/// The source stream and the output streams (`0` shards in the file: on-demand).
fn streams(inputs: &SetupInputs, encryption: bool) -> Vec<Planned> {
    let s = &inputs.section;
    let capacity = |n: Option<u32>, default: u32| match n.unwrap_or(default) {
        0 => Capacity::OnDemand,
        n => Capacity::Shards(n),
    };
    let mut streams = Vec::new();
    if let Some(src) = &inputs.source {
        streams.push(Planned::Stream {
            name: src.clone(),
            capacity: capacity(s.source_shards, 2),
            encrypted: encryption,
        });
    }
    for o in &inputs.output_streams {
        if Some(o) != inputs.source.as_ref() {
            streams.push(Planned::Stream {
                name: o.clone(),
                capacity: capacity(s.output_shards, 1),
                encrypted: encryption,
            });
        }
    }
    streams
}

/// The delivery streams and, in the same order, the role each delivers as.
fn delivery_resources(
    inputs: &SetupInputs,
    arns: &Arns<'_>,
    all_deliveries: &[(&String, bool)],
    key: Option<&String>,
) -> Result<(Vec<Planned>, Vec<Planned>)> {
    let s = &inputs.section;
    let mut delivery_roles = Vec::new();
    let mut deliveries = Vec::new();
    for (name, raw) in all_deliveries {
        let section = s.delivery.get(*name).cloned().unwrap_or_default();
        let destination = destination(name, *raw, &section, s.bucket.as_deref().unwrap_or(""))?;
        let role = role_name(&inputs.pipeline, &format!("firehose-{name}"));
        let policy = delivery_policy(arns, name, &destination, key);
        delivery_roles.push(Planned::Role {
            name: role.clone(),
            purpose: format!(
                "Firehose delivers `{name}` to {}{}",
                destination.kind(),
                if *raw { " (raw-data copy)" } else { "" }
            ),
            trust: delivery_trust(arns.account),
            policy,
        });
        deliveries.push(Planned::DeliveryStream {
            name: (*name).clone(),
            role,
            destination,
            encrypted: key.is_some(),
        });
    }
    Ok((delivery_roles, deliveries))
}

/// Firehose may assume a delivery role when it acts for `account`.
fn delivery_trust(account: &str) -> PolicyDocument {
    PolicyDocument::new(vec![Statement::allow(
        "FirehoseAssumesRole",
        &["sts:AssumeRole"],
        vec![],
    )
    .with_principal(Principal::Service("firehose.amazonaws.com".into()))
    // Firehose names the account it acts for as the external ID (its documented trust
    // policy); it is not documented to send `aws:SourceAccount`, which a condition would then
    // require, and the role could not be assumed.
    .with_condition("StringEquals", "sts:ExternalId", vec![account.to_owned()])])
}

/// The role the application running the pipeline assumes.
fn runtime_role(arns: &Arns<'_>, inputs: &SetupInputs, key: Option<&String>) -> Planned {
    Planned::Role {
        name: role_name(&inputs.pipeline, "runtime"),
        purpose: "what the application running the pipeline may do".into(),
        trust: runtime_trust(arns, &inputs.section.runtime_principals),
        policy: runtime_policy(arns, inputs, key),
    }
}

/// Who may assume the runtime role: `principals` (role or user ARNs, account ids, service
/// names), or the account when there are none.
fn runtime_trust(arns: &Arns<'_>, principals: &[String]) -> PolicyDocument {
    let principals: Vec<Principal> = if principals.is_empty() {
        vec![Principal::Aws(arns.root())]
    } else {
        principals
            .iter()
            .map(|p| {
                if p.starts_with("arn:") {
                    Principal::Aws(p.clone())
                } else if p.len() == 12 && p.bytes().all(|b| b.is_ascii_digit()) {
                    Principal::Aws(format!("arn:aws:iam::{p}:root"))
                } else {
                    Principal::Service(p.clone())
                }
            })
            .collect()
    };
    PolicyDocument::new(
        principals
            .into_iter()
            .enumerate()
            .map(|(i, pr)| {
                let service = matches!(pr, Principal::Service(_));
                let st = Statement::allow(&format!("AssumeRole{i}"), &["sts:AssumeRole"], vec![])
                    .with_principal(pr);
                // A service assumes the role only for this account's resources.
                if service {
                    st.with_condition(
                        "StringEquals",
                        "aws:SourceAccount",
                        vec![arns.account.to_owned()],
                    )
                } else {
                    st
                }
            })
            .collect(),
    )
}

/// Refuses the plan when a generated document fails [`policy::lint`].
fn lint_documents(resources: &[Planned]) -> Result<()> {
    for r in resources {
        let docs: Vec<(&PolicyDocument, DocumentKind, String)> = match r {
            Planned::Role {
                name,
                trust,
                policy,
                ..
            } => vec![
                (
                    trust,
                    DocumentKind::Trust,
                    format!("trust policy of {name}"),
                ),
                (policy, DocumentKind::Identity, format!("policy of {name}")),
            ],
            Planned::Key { alias, policy } => {
                vec![(
                    policy,
                    DocumentKind::KeyPolicy,
                    format!("key policy of {alias}"),
                )]
            }
            _ => vec![],
        };
        for (doc, kind, what) in docs {
            let problems = policy::lint(doc, kind);
            if !problems.is_empty() {
                return Err(Error::Pipeline(format!(
                    "the generated {what} fails the policy lint: {}",
                    problems.join("; ")
                )));
            }
        }
    }
    Ok(())
}

fn destination(name: &str, raw: bool, d: &DeliverySection, bucket: &str) -> Result<Destination> {
    let key = |k: &str| format!("setup.delivery.{name}.{k}");
    let compression = d
        .compression
        .clone()
        .unwrap_or_else(|| "UNCOMPRESSED".into());
    if !["UNCOMPRESSED", "GZIP", "ZIP", "Snappy", "HADOOP_SNAPPY"].contains(&compression.as_str()) {
        return Err(Error::config(
            key("compression"),
            format!("`{compression}` is not UNCOMPRESSED, GZIP, ZIP, Snappy or HADOOP_SNAPPY"),
        ));
    }
    let interval = d.buffer_interval_secs.unwrap_or(300);
    if !(0..=900).contains(&interval) {
        return Err(Error::config(
            key("buffer_interval_secs"),
            "Firehose takes 0 to 900 seconds",
        ));
    }
    let size = d.buffer_size_mb.unwrap_or(if raw { 10 } else { 5 });
    if !(1..=128).contains(&size) {
        return Err(Error::config(
            key("buffer_size_mb"),
            "Firehose takes 1 to 128 MiB",
        ));
    }
    let s3 = S3Destination {
        bucket: bucket.to_owned(),
        prefix: d.prefix.clone().unwrap_or_else(|| {
            if raw {
                "rawStreamData/".into()
            } else {
                "AggregatedData/".into()
            }
        }),
        error_prefix: d
            .error_prefix
            .clone()
            .unwrap_or_else(|| format!("processing-failed/{name}/")),
        buffer_interval_secs: interval,
        buffer_size_mb: size,
        compression,
    };
    let need = |v: &Option<String>, k: &str| {
        v.clone()
            .ok_or_else(|| Error::config(key(k), "required for this destination"))
    };
    match d.destination.as_deref().unwrap_or("s3") {
        "s3" => Ok(Destination::S3(s3)),
        "redshift" if !raw && !["UNCOMPRESSED", "GZIP"].contains(&s3.compression.as_str()) => {
            Err(Error::config(
                key("compression"),
                "Redshift loads UNCOMPRESSED or GZIP staging objects",
            ))
        }
        "redshift" if !raw => Ok(Destination::Redshift {
            jdbc_url: need(&d.jdbc_url, "jdbc_url")?,
            table: need(&d.table, "table")?,
            columns: d.columns.clone(),
            username: need(&d.username, "username")?,
            password_env: need(&d.password_env, "password_env")?,
            copy_options: d.copy_options.clone(),
            staging: s3,
        }),
        "opensearch" if !raw => {
            let rotation = d.index_rotation.clone().unwrap_or_else(|| "OneDay".into());
            if !["NoRotation", "OneHour", "OneDay", "OneWeek", "OneMonth"]
                .contains(&rotation.as_str())
            {
                return Err(Error::config(
                    key("index_rotation"),
                    format!("`{rotation}` is not NoRotation, OneHour, OneDay, OneWeek or OneMonth"),
                ));
            }
            Ok(Destination::OpenSearch {
                domain_arn: need(&d.domain_arn, "domain_arn")?,
                index: need(&d.index, "index")?,
                rotation,
                backup: s3,
            })
        }
        "redshift" | "opensearch" => Err(Error::config(
            key("destination"),
            "the raw-data copy goes to S3",
        )),
        other => Err(Error::config(
            key("destination"),
            format!("`{other}` is not s3, redshift or opensearch"),
        )),
    }
}

/// Objects under `prefix` of `bucket`. A prefix with expressions (`!{timestamp:…}`,
/// `!{partitionKeyFromQuery:…}`) is cut before the first one: the keys it makes all start with
/// the literal part.
fn objects(bucket: &str, prefix: &str) -> String {
    let literal = prefix.split("!{").next().unwrap_or("");
    format!("arn:aws:s3:::{bucket}/{literal}*")
}

/// Allows `actions` on the key only through `service` (`s3`, `kinesis`) in the region; the caller
/// adds the encryption context the service sets.
fn key_through(
    arns: &Arns<'_>,
    sid: &str,
    actions: &[&str],
    key: &str,
    service: &str,
) -> Statement {
    Statement::allow(sid, actions, vec![arn(key)]).with_condition(
        "StringEquals",
        "kms:ViaService",
        vec![format!("{service}.{}.amazonaws.com", arns.region)],
    )
}

/// Allows encrypting and decrypting `objects` (ARN patterns) with the key, through S3.
fn key_for_objects(arns: &Arns<'_>, sid: &str, key: &str, objects: Vec<String>) -> Statement {
    key_through(
        arns,
        sid,
        &["kms:Decrypt", "kms:GenerateDataKey"],
        key,
        "s3",
    )
    .with_condition("StringLike", "kms:EncryptionContext:aws:s3:arn", objects)
}

fn delivery_policy(
    arns: &Arns<'_>,
    name: &str,
    d: &Destination,
    key: Option<&String>,
) -> PolicyDocument {
    let s3 = d.s3();
    let bucket = format!("arn:aws:s3:::{}", s3.bucket);
    let mut st = vec![
        Statement::allow(
            "BucketLevel",
            &[
                "s3:GetBucketLocation",
                "s3:ListBucket",
                "s3:ListBucketMultipartUploads",
            ],
            vec![arn(&bucket)],
        ),
        Statement::allow(
            "ObjectsUnderPrefixes",
            &["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"],
            vec![
                arn(objects(&s3.bucket, &s3.prefix)),
                arn(objects(&s3.bucket, &s3.error_prefix)),
            ],
        ),
    ];
    // No CloudWatch Logs statement: the delivery streams are created without error logging, so
    // the role would never use it (the original granted logs:PutLogEvents).
    let _ = name;
    if let Some(key) = key {
        st.push(key_for_objects(
            arns,
            "EncryptObjectsThroughS3",
            key,
            vec![
                objects(&s3.bucket, &s3.prefix),
                objects(&s3.bucket, &s3.error_prefix),
            ],
        ));
    }
    if let Destination::OpenSearch { domain_arn, .. } = d {
        st.push(Statement::allow(
            "DescribeDomain",
            &[
                "es:DescribeDomain",
                "es:DescribeDomains",
                "es:DescribeDomainConfig",
            ],
            vec![arn(domain_arn)],
        ));
        st.push(Statement::allow(
            "WriteDocuments",
            &["es:ESHttpPost", "es:ESHttpPut", "es:ESHttpGet"],
            vec![arn(format!("{domain_arn}/*"))],
        ));
    }
    PolicyDocument::new(st)
}

/// The runtime role's policy: read the source, write the sinks, read the function modules, and
/// use the key for each of those.
fn runtime_policy(arns: &Arns<'_>, inputs: &SetupInputs, key: Option<&String>) -> PolicyDocument {
    let mut st = runtime_data_statements(arns, inputs);
    if let Some(key) = key {
        st.extend(runtime_key_statements(arns, inputs, key));
    }
    PolicyDocument::new(st)
}

/// The objects the S3 sinks write, sorted, each once.
fn sink_objects(inputs: &SetupInputs) -> Vec<String> {
    let mut objects: Vec<String> = inputs.s3_sinks.iter().map(|(b, p)| objects(b, p)).collect();
    objects.sort();
    objects.dedup();
    objects
}

/// The source stream read, the delivery streams, output streams and objects written, the
/// function modules read.
fn runtime_data_statements(arns: &Arns<'_>, inputs: &SetupInputs) -> Vec<Statement> {
    let mut st = Vec::new();
    if let Some(src) = &inputs.source {
        st.push(Statement::allow(
            "ReadSourceStream",
            &[
                "kinesis:DescribeStreamSummary",
                "kinesis:GetRecords",
                "kinesis:GetShardIterator",
                "kinesis:ListShards",
            ],
            vec![arn(arns.stream(src))],
        ));
    }
    let deliveries: Vec<Resource> = inputs
        .deliveries
        .iter()
        .chain(inputs.raw_delivery.iter())
        .map(|d| arn(arns.delivery(d)))
        .collect();
    if !deliveries.is_empty() {
        st.push(Statement::allow(
            "WriteDeliveryStreams",
            &["firehose:PutRecord", "firehose:PutRecordBatch"],
            deliveries,
        ));
    }
    if !inputs.output_streams.is_empty() {
        st.push(Statement::allow(
            "WriteOutputStreams",
            &["kinesis:PutRecord", "kinesis:PutRecords"],
            inputs
                .output_streams
                .iter()
                .map(|o| arn(arns.stream(o)))
                .collect(),
        ));
    }
    if !inputs.s3_sinks.is_empty() {
        st.push(Statement::allow(
            "WriteObjects",
            &["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"],
            sink_objects(inputs).into_iter().map(arn).collect(),
        ));
    }
    if !inputs.udf_objects.is_empty() {
        st.push(Statement::allow(
            "ReadFunctionModules",
            &["s3:GetObject"],
            inputs
                .udf_objects
                .iter()
                .map(|(b, k)| arn(format!("arn:aws:s3:::{b}/{k}")))
                .collect(),
        ));
    }
    st
}

/// The key's use for the streams, the sinks' objects, envelope encryption and the function
/// modules in encrypted buckets, each only through the service (or context) it is for.
fn runtime_key_statements(arns: &Arns<'_>, inputs: &SetupInputs, key: &str) -> Vec<Statement> {
    let mut st = Vec::new();
    let via_kinesis = inputs.source.is_some() || !inputs.output_streams.is_empty();
    if via_kinesis {
        let streams: Vec<String> = inputs
            .source
            .iter()
            .chain(&inputs.output_streams)
            .map(|n| arns.stream(n))
            .collect();
        st.push(
            key_through(
                arns,
                "EncryptedStreams",
                &["kms:Decrypt", "kms:GenerateDataKey"],
                key,
                "kinesis",
            )
            .with_condition(
                "StringEquals",
                "kms:EncryptionContext:aws:kinesis:arn",
                streams,
            ),
        );
    }
    if !inputs.s3_sinks.is_empty() {
        st.push(key_for_objects(
            arns,
            "EncryptedObjects",
            key,
            sink_objects(inputs),
        ));
    }
    if envelope_with_setup_key(inputs) {
        st.push(
            Statement::allow(
                "EnvelopeEncryption",
                &["kms:Decrypt", "kms:GenerateDataKey"],
                vec![arn(key)],
            )
            .with_condition(
                "StringEquals",
                &format!("kms:EncryptionContext:{}", crate::crypto::CONTEXT_PIPELINE),
                vec![inputs.pipeline.clone()],
            ),
        );
    }
    // Function modules in a bucket the setup encrypts with the key are decrypted through S3.
    let encrypted_buckets: Vec<&String> = inputs
        .section
        .bucket
        .iter()
        .chain(inputs.s3_sinks.iter().map(|(b, _)| b))
        .collect();
    let modules: Vec<String> = inputs
        .udf_objects
        .iter()
        .filter(|(b, _)| encrypted_buckets.contains(&b))
        .map(|(b, k)| format!("arn:aws:s3:::{b}/{k}"))
        .collect();
    if !modules.is_empty() {
        st.push(
            key_through(arns, "DecryptFunctionModules", &["kms:Decrypt"], key, "s3")
                .with_condition("StringEquals", "kms:EncryptionContext:aws:s3:arn", modules),
        );
    }
    st
}

/// The key policy: the account administers the key, IAM policies may grant its use, AWS services
/// may create grants for themselves, and `roles` (the delivery roles, then the runtime role) use it
/// as their IAM policies say.
fn key_policy<'a>(
    arns: &Arns<'_>,
    roles: impl Iterator<Item = &'a Planned>,
    key: &str,
) -> PolicyDocument {
    let mut st = vec![
        Statement::allow(
            "AccountAdministersTheKey",
            &[
                "kms:CancelKeyDeletion",
                "kms:CreateAlias",
                "kms:DeleteAlias",
                "kms:DescribeKey",
                "kms:DisableKey",
                "kms:DisableKeyRotation",
                "kms:EnableKey",
                "kms:EnableKeyRotation",
                "kms:GetKeyPolicy",
                "kms:GetKeyRotationStatus",
                "kms:ListResourceTags",
                "kms:PutKeyPolicy",
                "kms:ScheduleKeyDeletion",
                "kms:TagResource",
                "kms:UntagResource",
                "kms:UpdateAlias",
                "kms:UpdateKeyDescription",
            ],
            vec![Resource::AnyKeyPolicy],
        )
        .with_principal(Principal::Aws(arns.root())),
        // IAM policies of the account may grant the key's use (producers writing to the encrypted
        // source stream, readers of the bucket, `rivulet decrypt`): each still needs an IAM policy
        // that names the key, as the runtime and delivery roles have.
        Statement::allow(
            "IamPoliciesMayGrantUse",
            &["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"],
            vec![Resource::AnyKeyPolicy],
        )
        .with_principal(Principal::Aws(arns.root())),
        // Firehose server-side encryption creates a grant for itself.
        Statement::allow(
            "AwsServicesMayCreateGrants",
            &["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"],
            vec![Resource::AnyKeyPolicy],
        )
        .with_principal(Principal::Aws(arns.root()))
        .with_condition("Bool", "kms:GrantIsForAWSResource", vec!["true".into()]),
    ];
    // A key policy statement naming a principal allows on its own, without the principal's IAM
    // policy: each role gets the statements of its IAM policy on the key, with the same actions
    // and the same conditions (the services it may use the key through, the encryption context),
    // so that the key policy grants no more than the IAM policy does.
    let key = arn(key);
    for (i, role) in roles.enumerate() {
        let Planned::Role { name, policy, .. } = role else {
            continue;
        };
        for s in &policy.statements {
            if !s.resources.contains(&key) || !s.actions.iter().all(|a| a.starts_with("kms:")) {
                continue;
            }
            st.push(Statement {
                sid: format!("RoleUsesTheKey{i}{}", s.sid),
                effect: s.effect,
                principal: Some(Principal::Aws(arns.role(name))),
                actions: s.actions.clone(),
                resources: vec![Resource::AnyKeyPolicy],
                condition: s.condition.clone(),
            });
        }
    }
    PolicyDocument::new(st)
}

/// Role-level summary for tests and listings: role name → statement ids.
pub fn statements_by_role(plan: &Plan) -> BTreeMap<String, Vec<String>> {
    plan.resources
        .iter()
        .filter_map(|(r, _)| match r {
            Planned::Role { name, policy, .. } => Some((
                name.clone(),
                policy.statements.iter().map(|s| s.sid.clone()).collect(),
            )),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests;
