//! The plan as a CloudFormation template (JSON), for teams that deploy through CloudFormation:
//! one declaration per planned resource, then the account, region and key made the stack's own.

use serde_json::{json, Map, Value};

use super::{
    Action, Capacity, Destination, Plan, Planned, PolicyDocument, S3Destination, TAG_PIPELINE,
};

/// A CloudFormation template creating the plan's resources (those rivulet would create or manage;
/// resources that exist outside rivulet are referenced, not declared). Role and key ARNs are
/// `Fn::GetAtt` references, so the template deploys in any account; the Redshift password is a
/// `NoEcho` parameter.
pub fn cloudformation(plan: &Plan) -> Value {
    let mut template = Template::new(plan);
    for (r, action) in &plan.resources {
        if *action != Action::External {
            template.declare(r);
        }
    }
    template.finish()
}

/// The template as it is written: its resources and parameters so far, and what the resources
/// refer to.
struct Template<'a> {
    plan: &'a Plan,
    resources: Map<String, Value>,
    parameters: Map<String, Value>,
    /// The tag every resource carries.
    tags: Value,
    /// The key's ARN, as the template refers to it.
    key_ref: Value,
    /// Whether the plan has a key (resources are encrypted only then).
    has_key: bool,
    /// The roles' logical ids, which the key depends on.
    role_ids: Vec<String>,
}

impl<'a> Template<'a> {
    fn new(plan: &'a Plan) -> Self {
        let has_key = plan
            .resources
            .iter()
            .any(|(r, _)| matches!(r, Planned::Key { .. }));
        let role_ids = plan
            .resources
            .iter()
            .filter_map(|(r, _)| match r {
                Planned::Role { name, .. } => Some(logical("Role", name)),
                _ => None,
            })
            .collect();
        Self {
            plan,
            resources: Map::new(),
            parameters: Map::new(),
            tags: json!([{ "Key": TAG_PIPELINE, "Value": plan.pipeline }]),
            key_ref: json!({ "Fn::GetAtt": ["Key", "Arn"] }),
            has_key,
            role_ids,
        }
    }

    /// Adds the resources declaring `r`.
    fn declare(&mut self, r: &Planned) {
        match r {
            Planned::Key { alias, policy } => self.key(alias, policy),
            Planned::Bucket { name, encrypted } => self.bucket(name, *encrypted),
            Planned::Stream {
                name,
                capacity,
                encrypted,
            } => self.stream(name, capacity, *encrypted),
            Planned::Role {
                name,
                purpose,
                trust,
                policy,
            } => self.role(name, purpose, trust, policy),
            Planned::DeliveryStream {
                name,
                role,
                destination,
                encrypted,
            } => self.delivery_stream(name, role, destination, *encrypted),
        }
    }

    fn key(&mut self, alias: &str, policy: &PolicyDocument) {
        self.resources.insert(
            "Key".into(),
            json!({
                "Type": "AWS::KMS::Key",
                "Properties": {
                    "Description": format!("rivulet pipeline `{}`", self.plan.pipeline),
                    "EnableKeyRotation": true,
                    "KeyPolicy": policy.to_value(),
                    "Tags": self.tags,
                },
                // The key policy names the roles, which must exist first; the roles'
                // own policies (which name the key) come after it.
                "DependsOn": self.role_ids,
                // Deleting the stack must not make the data it encrypted unreadable.
                "DeletionPolicy": "Retain",
                "UpdateReplacePolicy": "Retain",
            }),
        );
        self.resources.insert(
            "KeyAlias".into(),
            json!({
                "Type": "AWS::KMS::Alias",
                "Properties": { "AliasName": alias, "TargetKeyId": { "Ref": "Key" } }
            }),
        );
    }

    fn bucket(&mut self, name: &str, encrypted: bool) {
        let mut props = json!({ "BucketName": name, "Tags": self.tags });
        if encrypted && self.has_key {
            props["BucketEncryption"] = json!({
                "ServerSideEncryptionConfiguration": [{
                    "ServerSideEncryptionByDefault": {
                        "SSEAlgorithm": "aws:kms",
                        "KMSMasterKeyID": self.key_ref,
                    },
                    "BucketKeyEnabled": false,
                }]
            });
        }
        self.resources.insert(
            logical("Bucket", name),
            json!({ "Type": "AWS::S3::Bucket", "DeletionPolicy": "Retain", "Properties": props }),
        );
    }

    fn stream(&mut self, name: &str, capacity: &Capacity, encrypted: bool) {
        let mut props = json!({ "Name": name, "Tags": self.tags });
        match capacity {
            Capacity::Shards(n) => props["ShardCount"] = json!(n),
            Capacity::OnDemand => props["StreamModeDetails"] = json!({ "StreamMode": "ON_DEMAND" }),
        }
        if encrypted && self.has_key {
            props["StreamEncryption"] = json!({ "EncryptionType": "KMS", "KeyId": self.key_ref });
        }
        self.resources.insert(
            logical("Stream", name),
            json!({ "Type": "AWS::Kinesis::Stream", "Properties": props }),
        );
    }

    /// The role and, as a resource of its own, its inline policy.
    fn role(&mut self, name: &str, purpose: &str, trust: &PolicyDocument, policy: &PolicyDocument) {
        self.resources.insert(
            logical("Role", name),
            json!({
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "RoleName": name,
                    "Description": purpose,
                    "AssumeRolePolicyDocument": trust.to_value(),
                    "Tags": self.tags,
                }
            }),
        );
        self.resources.insert(
            logical("Policy", name),
            json!({
                "Type": "AWS::IAM::RolePolicy",
                "Properties": {
                    "RoleName": { "Ref": logical("Role", name) },
                    "PolicyName": "rivulet",
                    "PolicyDocument": policy.to_value(),
                }
            }),
        );
    }

    fn delivery_stream(
        &mut self,
        name: &str,
        role: &str,
        destination: &Destination,
        encrypted: bool,
    ) {
        let role_arn = json!({ "Fn::GetAtt": [logical("Role", role), "Arn"] });
        let mut depends = vec![logical("Policy", role)];
        let bucket_id = logical("Bucket", &destination.s3().bucket);
        if self.resources.contains_key(&bucket_id) {
            depends.push(bucket_id);
        }
        let s3_config = self.s3_configuration(destination.s3(), &role_arn, encrypted);
        let mut props = json!({
            "DeliveryStreamName": name,
            "DeliveryStreamType": "DirectPut",
            "Tags": self.tags,
        });
        let (property, config) = self.destination(name, destination, role_arn, s3_config);
        props[property] = config;
        if encrypted && self.has_key {
            props["DeliveryStreamEncryptionConfigurationInput"] =
                json!({ "KeyType": "CUSTOMER_MANAGED_CMK", "KeyARN": self.key_ref });
        }
        self.resources.insert(
            logical("DeliveryStream", name),
            json!({
                "Type": "AWS::KinesisFirehose::DeliveryStream",
                "Properties": props,
                // Firehose checks that it may assume the role and write the bucket.
                "DependsOn": depends,
            }),
        );
    }

    /// The S3 part of a delivery stream's configuration (its destination, staging or backup).
    fn s3_configuration(&self, s3: &S3Destination, role_arn: &Value, encrypted: bool) -> Value {
        let mut s3_config = json!({
            "BucketARN": format!("arn:aws:s3:::{}", s3.bucket),
            "Prefix": s3.prefix,
            "ErrorOutputPrefix": s3.error_prefix,
            "BufferingHints": {
                "IntervalInSeconds": s3.buffer_interval_secs,
                "SizeInMBs": s3.buffer_size_mb,
            },
            "CompressionFormat": s3.compression,
            "RoleARN": role_arn,
        });
        if encrypted && self.has_key {
            s3_config["EncryptionConfiguration"] =
                json!({ "KMSEncryptionConfig": { "AWSKMSKeyARN": self.key_ref } });
        }
        s3_config
    }

    /// The delivery stream's destination property and its configuration; a Redshift password
    /// becomes a parameter.
    fn destination(
        &mut self,
        name: &str,
        destination: &Destination,
        role_arn: Value,
        s3_config: Value,
    ) -> (&'static str, Value) {
        match destination {
            Destination::S3(_) => ("ExtendedS3DestinationConfiguration", s3_config),
            Destination::Redshift {
                jdbc_url,
                table,
                columns,
                username,
                copy_options,
                ..
            } => {
                let param = self.redshift_password(name);
                let mut copy = json!({ "DataTableName": table });
                if let Some(c) = columns {
                    copy["DataTableColumns"] = json!(c);
                }
                if let Some(o) = copy_options {
                    copy["CopyOptions"] = json!(o);
                }
                (
                    "RedshiftDestinationConfiguration",
                    json!({
                        "ClusterJDBCURL": jdbc_url,
                        "CopyCommand": copy,
                        "Username": username,
                        "Password": { "Ref": param },
                        "RoleARN": role_arn,
                        "S3Configuration": s3_config,
                    }),
                )
            }
            Destination::OpenSearch {
                domain_arn,
                index,
                rotation,
                ..
            } => (
                "AmazonopensearchserviceDestinationConfiguration",
                json!({
                    "DomainARN": domain_arn,
                    "IndexName": index,
                    "IndexRotationPeriod": rotation,
                    "RoleARN": role_arn,
                    "S3BackupMode": "FailedDocumentsOnly",
                    "S3Configuration": s3_config,
                }),
            ),
        }
    }

    /// Declares the `NoEcho` parameter of a Redshift delivery stream's password; its name.
    fn redshift_password(&mut self, name: &str) -> String {
        let param = format!("{}Password", logical("", name));
        self.parameters.insert(
            param.clone(),
            json!({
                "Type": "String",
                "NoEcho": true,
                "Description": format!("Redshift password for delivery stream {name}"),
            }),
        );
        param
    }

    /// The template, with the stack's own account, region and key in the plan's ARNs.
    fn finish(self) -> Value {
        let plan = self.plan;
        let mut template = json!({
            "AWSTemplateFormatVersion": "2010-09-09",
            "Description": format!("rivulet pipeline `{}`: streams, delivery streams, bucket, key and least-privilege roles", plan.pipeline),
            "Resources": Value::Object(self.resources),
        });
        if !self.parameters.is_empty() {
            template["Parameters"] = Value::Object(self.parameters);
        }
        // The plan's policies name this account's ARNs; in a template, the account and region are
        // the stack's own.
        let key_arn = plan.key_arn();
        substitute(&mut template, plan, key_arn.as_deref());
        template
    }
}

/// The stack's own account, region and key in place of this account's: the key's ARN (or the
/// placeholder used before it exists) becomes `Fn::GetAtt`, and strings naming the account or
/// region become `Fn::Sub`.
fn substitute(v: &mut Value, plan: &Plan, key_arn: Option<&str>) {
    match v {
        Value::String(s) => {
            if Some(s.as_str()) == key_arn
                || (s.starts_with("arn:aws:kms:") && s.ends_with(super::KEY_PENDING))
            {
                *v = json!({ "Fn::GetAtt": ["Key", "Arn"] });
                return;
            }
            if *s == plan.account {
                *v = json!({ "Ref": "AWS::AccountId" });
                return;
            }
            let replaced = s
                .replace(&format!(":{}:", plan.account), ":${AWS::AccountId}:")
                .replace(&format!(":{}:", plan.region), ":${AWS::Region}:")
                .replace(
                    &format!(".{}.amazonaws.com", plan.region),
                    ".${AWS::Region}.amazonaws.com",
                );
            if replaced != *s {
                *v = json!({ "Fn::Sub": replaced });
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| substitute(x, plan, key_arn)),
        Value::Object(o) => {
            // Already references.
            if o.contains_key("Fn::GetAtt") || o.contains_key("Ref") || o.contains_key("Fn::Sub") {
                return;
            }
            o.values_mut().for_each(|x| substitute(x, plan, key_arn))
        }
        _ => {}
    }
}

/// A CloudFormation logical id: alphanumeric.
fn logical(kind: &str, name: &str) -> String {
    let mut id = String::from(kind);
    let mut upper = true;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            id.push(if upper { c.to_ascii_uppercase() } else { c });
            upper = false;
        } else {
            upper = true;
        }
    }
    id
}
