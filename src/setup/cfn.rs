//! The plan as a CloudFormation template (JSON), for teams that deploy through CloudFormation.

use serde_json::{json, Map, Value};

use super::{Capacity, Destination, Plan, Planned, TAG_PIPELINE};

/// A CloudFormation template creating the plan's resources (those rivulet would create or manage;
/// resources that exist outside rivulet are referenced, not declared). Role and key ARNs are
/// `Fn::GetAtt` references, so the template deploys in any account; the Redshift password is a
/// `NoEcho` parameter.
pub fn cloudformation(plan: &Plan) -> Value {
    let mut resources = Map::new();
    let mut parameters = Map::new();
    let tags = json!([{ "Key": TAG_PIPELINE, "Value": plan.pipeline }]);
    let key_ref = json!({ "Fn::GetAtt": ["Key", "Arn"] });
    let has_key = plan
        .resources
        .iter()
        .any(|(r, _)| matches!(r, Planned::Key { .. }));
    let role_ids: Vec<String> = plan
        .resources
        .iter()
        .filter_map(|(r, _)| match r {
            Planned::Role { name, .. } => Some(logical("Role", name)),
            _ => None,
        })
        .collect();
    for (r, action) in &plan.resources {
        if *action == super::Action::External {
            continue;
        }
        match r {
            Planned::Key { alias, policy } => {
                resources.insert(
                    "Key".into(),
                    json!({
                        "Type": "AWS::KMS::Key",
                        "Properties": {
                            "Description": format!("rivulet pipeline `{}`", plan.pipeline),
                            "EnableKeyRotation": true,
                            "KeyPolicy": policy.to_value(),
                            "Tags": tags,
                        },
                        // The key policy names the roles, which must exist first; the roles'
                        // own policies (which name the key) come after it.
                        "DependsOn": role_ids,
                        // Deleting the stack must not make the data it encrypted unreadable.
                        "DeletionPolicy": "Retain",
                        "UpdateReplacePolicy": "Retain",
                    }),
                );
                resources.insert(
                    "KeyAlias".into(),
                    json!({
                        "Type": "AWS::KMS::Alias",
                        "Properties": { "AliasName": alias, "TargetKeyId": { "Ref": "Key" } }
                    }),
                );
            }
            Planned::Bucket { name, encrypted } => {
                let mut props = json!({ "BucketName": name, "Tags": tags });
                if *encrypted && has_key {
                    props["BucketEncryption"] = json!({
                        "ServerSideEncryptionConfiguration": [{
                            "ServerSideEncryptionByDefault": {
                                "SSEAlgorithm": "aws:kms",
                                "KMSMasterKeyID": key_ref,
                            },
                            "BucketKeyEnabled": false,
                        }]
                    });
                }
                resources.insert(
                    logical("Bucket", name),
                    json!({ "Type": "AWS::S3::Bucket", "DeletionPolicy": "Retain", "Properties": props }),
                );
            }
            Planned::Stream {
                name,
                capacity,
                encrypted,
            } => {
                let mut props = json!({ "Name": name, "Tags": tags });
                match capacity {
                    Capacity::Shards(n) => props["ShardCount"] = json!(n),
                    Capacity::OnDemand => {
                        props["StreamModeDetails"] = json!({ "StreamMode": "ON_DEMAND" })
                    }
                }
                if *encrypted && has_key {
                    props["StreamEncryption"] =
                        json!({ "EncryptionType": "KMS", "KeyId": key_ref });
                }
                resources.insert(
                    logical("Stream", name),
                    json!({ "Type": "AWS::Kinesis::Stream", "Properties": props }),
                );
            }
            Planned::Role {
                name,
                purpose,
                trust,
                policy,
            } => {
                resources.insert(
                    logical("Role", name),
                    json!({
                        "Type": "AWS::IAM::Role",
                        "Properties": {
                            "RoleName": name,
                            "Description": purpose,
                            "AssumeRolePolicyDocument": trust.to_value(),
                            "Tags": tags,
                        }
                    }),
                );
                resources.insert(
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
            Planned::DeliveryStream {
                name,
                role,
                destination,
                encrypted,
            } => {
                let role_arn = json!({ "Fn::GetAtt": [logical("Role", role), "Arn"] });
                let mut depends = vec![logical("Policy", role)];
                let bucket_id = logical("Bucket", &destination.s3().bucket);
                if resources.contains_key(&bucket_id) {
                    depends.push(bucket_id);
                }
                let s3 = destination.s3();
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
                if *encrypted && has_key {
                    s3_config["EncryptionConfiguration"] =
                        json!({ "KMSEncryptionConfig": { "AWSKMSKeyARN": key_ref } });
                }
                let mut props = json!({
                    "DeliveryStreamName": name,
                    "DeliveryStreamType": "DirectPut",
                    "Tags": tags,
                });
                match destination {
                    Destination::S3(_) => {
                        props["ExtendedS3DestinationConfiguration"] = s3_config;
                    }
                    Destination::Redshift {
                        jdbc_url,
                        table,
                        columns,
                        username,
                        copy_options,
                        ..
                    } => {
                        let param = format!("{}Password", logical("", name));
                        parameters.insert(
                            param.clone(),
                            json!({
                                "Type": "String",
                                "NoEcho": true,
                                "Description": format!("Redshift password for delivery stream {name}"),
                            }),
                        );
                        let mut copy = json!({ "DataTableName": table });
                        if let Some(c) = columns {
                            copy["DataTableColumns"] = json!(c);
                        }
                        if let Some(o) = copy_options {
                            copy["CopyOptions"] = json!(o);
                        }
                        props["RedshiftDestinationConfiguration"] = json!({
                            "ClusterJDBCURL": jdbc_url,
                            "CopyCommand": copy,
                            "Username": username,
                            "Password": { "Ref": param },
                            "RoleARN": role_arn,
                            "S3Configuration": s3_config,
                        });
                    }
                    Destination::OpenSearch {
                        domain_arn,
                        index,
                        rotation,
                        ..
                    } => {
                        props["AmazonopensearchserviceDestinationConfiguration"] = json!({
                            "DomainARN": domain_arn,
                            "IndexName": index,
                            "IndexRotationPeriod": rotation,
                            "RoleARN": role_arn,
                            "S3BackupMode": "FailedDocumentsOnly",
                            "S3Configuration": s3_config,
                        });
                    }
                }
                if *encrypted && has_key {
                    props["DeliveryStreamEncryptionConfigurationInput"] =
                        json!({ "KeyType": "CUSTOMER_MANAGED_CMK", "KeyARN": key_ref });
                }
                resources.insert(
                    logical("DeliveryStream", name),
                    json!({
                        "Type": "AWS::KinesisFirehose::DeliveryStream",
                        "Properties": props,
                        // Firehose checks that it may assume the role and write the bucket.
                        "DependsOn": depends,
                    }),
                );
            }
        }
    }
    let mut template = json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": format!("rivulet pipeline `{}`: streams, delivery streams, bucket, key and least-privilege roles", plan.pipeline),
        "Resources": Value::Object(resources),
    });
    if !parameters.is_empty() {
        template["Parameters"] = Value::Object(parameters);
    }
    // The plan's policies name this account's ARNs; in a template, the account and region are
    // the stack's own.
    let key_arn = plan.key_arn();
    substitute(&mut template, plan, key_arn.as_deref());
    template
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
