//! Policies for every combination of options, without AWS.

use super::*;
use crate::config::SetupSection;

fn inputs(destination: &str, encryption: bool, raw: bool) -> SetupInputs {
    let mut section = SetupSection {
        bucket: Some("analytics".into()),
        encryption: Some(encryption),
        ..SetupSection::default()
    };
    let d = DeliverySection {
        destination: Some(destination.into()),
        jdbc_url: Some("jdbc:redshift://c.example:5439/db".into()),
        table: Some("ticker".into()),
        username: Some("loader".into()),
        password_env: Some("PW".into()),
        domain_arn: Some("arn:aws:es:us-east-1:123456789012:domain/search".into()),
        index: Some("ticker".into()),
        ..DeliverySection::default()
    };
    section.delivery.insert("out".into(), d);
    SetupInputs {
        pipeline: "ticker".into(),
        section,
        source: Some("ticker-stream".into()),
        region: Some("us-east-1".into()),
        endpoint_url: None,
        deliveries: vec!["out".into()],
        raw_delivery: raw.then(|| "raw".into()),
        output_streams: vec![],
        s3_sinks: vec![],
        envelope_keys: vec![],
        udf_objects: vec![],
    }
}

#[test]
fn roles_and_statements_for_every_combination() {
    for destination in ["s3", "redshift", "opensearch"] {
        for encryption in [false, true] {
            for raw in [false, true] {
                let plan = desired(
                    &inputs(destination, encryption, raw),
                    "123456789012",
                    "us-east-1",
                    encryption.then_some("arn:aws:kms:us-east-1:123456789012:key/k"),
                )
                .unwrap();
                let roles = statements_by_role(&plan);
                let case = format!("{destination} encryption={encryption} raw={raw}");
                // The runtime role, one delivery role, and one for the raw copy.
                assert_eq!(roles.len(), 2 + raw as usize, "{case}: {roles:?}");
                let runtime = &roles["rivulet-ticker-runtime"];
                let mut want_runtime = vec!["ReadSourceStream", "WriteDeliveryStreams"];
                if encryption {
                    want_runtime.push("EncryptedStreams");
                }
                assert_eq!(runtime, &want_runtime, "{case}");
                let delivery = &roles["rivulet-ticker-firehose-out"];
                let mut want = vec!["BucketLevel", "ObjectsUnderPrefixes"];
                if encryption {
                    want.push("EncryptObjectsThroughS3");
                }
                if destination == "opensearch" {
                    want.extend(["DescribeDomain", "WriteDocuments"]);
                }
                assert_eq!(delivery, &want, "{case}");
                if raw {
                    let r = &roles["rivulet-ticker-firehose-raw"];
                    assert_eq!(r.len(), 2 + encryption as usize, "{case}");
                }
                let has_key = plan
                    .resources
                    .iter()
                    .any(|(r, _)| matches!(r, Planned::Key { .. }));
                assert_eq!(has_key, encryption, "{case}");
            }
        }
    }
}

#[test]
fn delivery_roles_are_scoped_to_their_prefixes_account_and_key() {
    let plan = desired(
        &inputs("s3", true, true),
        "123456789012",
        "us-east-1",
        Some("arn:aws:kms:us-east-1:123456789012:key/k"),
    )
    .unwrap();
    let (trust, policy) = plan
        .resources
        .iter()
        .find_map(|(r, _)| match r {
            Planned::Role {
                name,
                trust,
                policy,
                ..
            } if name == "rivulet-ticker-firehose-raw" => Some((trust, policy)),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        trust.to_value()["Statement"][0]["Condition"],
        serde_json::json!({"StringEquals": {"sts:ExternalId": ["123456789012"]}})
    );
    let p = policy.to_value();
    assert_eq!(
        p["Statement"][1]["Resource"],
        serde_json::json!([
            "arn:aws:s3:::analytics/rawStreamData/*",
            "arn:aws:s3:::analytics/processing-failed/raw/*"
        ])
    );
    assert_eq!(
        p["Statement"][2]["Condition"]["StringEquals"]["kms:ViaService"],
        serde_json::json!(["s3.us-east-1.amazonaws.com"])
    );
    assert_eq!(
        p["Statement"][2]["Resource"],
        serde_json::json!(["arn:aws:kms:us-east-1:123456789012:key/k"])
    );
    // No generated document has a wildcard action, and `*` resources only in the key policy.
    fn walk(v: &serde_json::Value, in_key_policy: bool, stars: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(o) => {
                for (k, x) in o {
                    if k == "Action" {
                        for a in x.as_array().unwrap() {
                            assert!(!a.as_str().unwrap().contains('*'), "{a}");
                        }
                    }
                    if k == "Resource" && x.to_string().contains("\"*\"") {
                        stars.push(format!("in key policy: {in_key_policy}"));
                        assert!(in_key_policy, "{x}");
                    }
                    walk(x, in_key_policy || k == "KeyPolicy", stars);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, in_key_policy, stars)),
            _ => {}
        }
    }
    let mut stars = Vec::new();
    walk(&cloudformation(&plan), false, &mut stars);
    assert!(
        !stars.is_empty(),
        "the key policy's statements use `*` for the key"
    );
}

#[test]
fn the_cloudformation_template_references_the_stack_not_this_account() {
    let plan = desired(
        &inputs("redshift", true, false),
        "123456789012",
        "us-east-1",
        None,
    )
    .unwrap();
    let t = cloudformation(&plan);
    let text = t.to_string();
    assert!(!text.contains("123456789012"), "{text}");
    assert!(!text.contains(KEY_PENDING));
    assert_eq!(
        t["Resources"]["Key"]["Properties"]["EnableKeyRotation"],
        true
    );
    assert_eq!(t["Parameters"]["OutPassword"]["NoEcho"], true);
    let ds = &t["Resources"]["DeliveryStreamOut"]["Properties"];
    assert_eq!(
        ds["RedshiftDestinationConfiguration"]["S3Configuration"]["BufferingHints"],
        serde_json::json!({"IntervalInSeconds": 300, "SizeInMBs": 5})
    );
    assert_eq!(
        ds["DeliveryStreamEncryptionConfigurationInput"]["KeyARN"],
        serde_json::json!({"Fn::GetAtt": ["Key", "Arn"]})
    );
}

#[test]
fn configuration_mistakes_are_named() {
    let mut i = inputs("s3", false, false);
    i.section.bucket = None;
    let e = desired(&i, "1", "us-east-1", None).unwrap_err().to_string();
    assert!(e.contains("setup.bucket"), "{e}");
    let mut i = inputs("ftp", false, false);
    i.section.bucket = Some("b".into());
    let e = desired(&i, "1", "us-east-1", None).unwrap_err().to_string();
    assert!(e.contains("setup.delivery.out.destination"), "{e}");
    let mut i = inputs("s3", false, false);
    i.section.delivery.get_mut("out").unwrap().buffer_size_mb = Some(500);
    assert!(desired(&i, "1", "us-east-1", None).is_err());
    let mut i = inputs("s3", false, false);
    i.section
        .delivery
        .insert("nowhere".into(), DeliverySection::default());
    let e = desired(&i, "1", "us-east-1", None).unwrap_err().to_string();
    assert!(e.contains("setup.delivery.nowhere"), "{e}");
}

/// Every AWS call rivulet makes at run time, with the IAM action it needs and the resource: the
/// runtime role must allow each, for a pipeline that uses every component.
#[test]
fn the_runtime_role_allows_every_call_rivulet_makes() {
    let mut i = inputs("s3", true, true);
    i.output_streams = vec!["out-stream".into()];
    i.s3_sinks = vec![("sink-bucket".into(), "data/!{timestamp:yyyy}/".into())];
    i.envelope_keys = vec![key_alias(&i.pipeline)];
    i.udf_objects = vec![("udf-bucket".into(), "udfs/f.wasm".into())];
    let key = "arn:aws:kms:us-east-1:123456789012:key/k";
    let plan = desired(&i, "123456789012", "us-east-1", Some(key)).unwrap();
    let policy = plan
        .resources
        .iter()
        .find_map(|(r, _)| match r {
            Planned::Role { name, policy, .. } if name.ends_with("-runtime") => Some(policy),
            _ => None,
        })
        .unwrap();
    let stream = "arn:aws:kinesis:us-east-1:123456789012:stream/ticker-stream";
    let calls = [
        // src/kinesis/api.rs
        ("kinesis:ListShards", stream.to_owned()),
        ("kinesis:GetShardIterator", stream.to_owned()),
        ("kinesis:GetRecords", stream.to_owned()),
        // src/sink/firehose.rs (sinks and the raw copy)
        (
            "firehose:PutRecordBatch",
            "arn:aws:firehose:us-east-1:123456789012:deliverystream/out".to_owned(),
        ),
        (
            "firehose:PutRecordBatch",
            "arn:aws:firehose:us-east-1:123456789012:deliverystream/raw".to_owned(),
        ),
        // src/kinesis/sink.rs
        (
            "kinesis:PutRecords",
            "arn:aws:kinesis:us-east-1:123456789012:stream/out-stream".to_owned(),
        ),
        // src/sink/s3.rs: PutObject covers multipart uploads; their abort needs its own action.
        (
            "s3:PutObject",
            "arn:aws:s3:::sink-bucket/data/2026/x.json".to_owned(),
        ),
        (
            "s3:AbortMultipartUpload",
            "arn:aws:s3:::sink-bucket/data/2026/x.json".to_owned(),
        ),
        // src/wasm: modules loaded from S3
        (
            "s3:GetObject",
            "arn:aws:s3:::udf-bucket/udfs/f.wasm".to_owned(),
        ),
        // src/crypto: envelope encryption
        ("kms:GenerateDataKey", key.to_owned()),
        ("kms:Decrypt", key.to_owned()),
    ];
    let covers = |pattern: &str, resource: &str| match pattern.strip_suffix('*') {
        Some(prefix) => resource.starts_with(prefix),
        None => pattern == resource,
    };
    for (action, resource) in calls {
        let allowed = policy.statements.iter().any(|st| {
            st.actions.iter().any(|a| a == action)
                && st.resources.iter().any(|r| match r {
                    Resource::Arn(p) => covers(p, &resource),
                    Resource::AnyKeyPolicy => false,
                })
        });
        assert!(
            allowed,
            "{action} on {resource} is not allowed by {}",
            policy.to_json_pretty()
        );
    }
    // The prefix's expression is cut: the literal part scopes the objects.
    assert!(policy.to_json().contains("arn:aws:s3:::sink-bucket/data/*"));
    assert!(!policy.to_json().contains("!{"));
}

#[test]
fn the_key_policy_lets_aws_services_create_grants_and_iam_grant_use() {
    let plan = desired(
        &inputs("s3", true, false),
        "123456789012",
        "us-east-1",
        Some("arn:aws:kms:us-east-1:123456789012:key/k"),
    )
    .unwrap();
    let policy = plan
        .resources
        .iter()
        .find_map(|(r, _)| match r {
            Planned::Key { policy, .. } => Some(policy.to_value()),
            _ => None,
        })
        .unwrap();
    let grants = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Sid"] == "AwsServicesMayCreateGrants")
        .unwrap();
    assert_eq!(
        grants["Condition"],
        serde_json::json!({"Bool": {"kms:GrantIsForAWSResource": ["true"]}})
    );
    let text = policy.to_string();
    assert!(text.contains("kms:PutKeyPolicy") && text.contains("IamPoliciesMayGrantUse"));
}

/// A pipeline with every component that uses the key: Kinesis streams, S3 sinks, envelope
/// encryption, delivery streams and the raw copy.
fn every_key_user() -> SetupInputs {
    let mut i = inputs("s3", true, true);
    i.output_streams = vec!["out-stream".into()];
    i.s3_sinks = vec![("sink-bucket".into(), "data/".into())];
    i.envelope_keys = vec![key_alias(&i.pipeline)];
    i
}

fn key_policy_of(plan: &Plan) -> &PolicyDocument {
    plan.resources
        .iter()
        .find_map(|(r, _)| match r {
            Planned::Key { policy, .. } => Some(policy),
            _ => None,
        })
        .unwrap()
}

/// The statements of the key policy that name `principal`, as JSON without their sid.
fn key_statements_for(key_policy: &serde_json::Value, principal: &str) -> Vec<serde_json::Value> {
    key_policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["Principal"]["AWS"] == principal)
        .map(|s| {
            let mut s = s.clone();
            s.as_object_mut().unwrap().remove("Sid");
            s
        })
        .collect()
}

/// A key policy statement naming a role allows on its own: it carries the conditions of the
/// role's IAM policy, so that the key policy lets the runtime role use the key only through
/// Kinesis for the pipeline's streams, through S3 for its sinks' prefixes, and for envelopes only
/// under the pipeline's context.
#[test]
fn the_key_policy_holds_each_role_to_the_conditions_of_its_iam_policy() {
    let key = "arn:aws:kms:us-east-1:123456789012:key/k";
    let plan = desired(&every_key_user(), "123456789012", "us-east-1", Some(key)).unwrap();
    let policy = key_policy_of(&plan).to_value();
    let runtime = "arn:aws:iam::123456789012:role/rivulet-ticker-runtime";
    let kms = serde_json::json!(["kms:Decrypt", "kms:GenerateDataKey"]);
    assert_eq!(
        key_statements_for(&policy, runtime),
        vec![
            serde_json::json!({
                "Effect": "Allow",
                "Principal": {"AWS": runtime},
                "Action": kms,
                "Resource": ["*"],
                "Condition": {"StringEquals": {
                    "kms:ViaService": ["kinesis.us-east-1.amazonaws.com"],
                    "kms:EncryptionContext:aws:kinesis:arn": [
                        "arn:aws:kinesis:us-east-1:123456789012:stream/ticker-stream",
                        "arn:aws:kinesis:us-east-1:123456789012:stream/out-stream"
                    ]
                }}
            }),
            serde_json::json!({
                "Effect": "Allow",
                "Principal": {"AWS": runtime},
                "Action": kms,
                "Resource": ["*"],
                "Condition": {
                    "StringEquals": {"kms:ViaService": ["s3.us-east-1.amazonaws.com"]},
                    "StringLike": {"kms:EncryptionContext:aws:s3:arn": ["arn:aws:s3:::sink-bucket/data/*"]}
                }
            }),
            serde_json::json!({
                "Effect": "Allow",
                "Principal": {"AWS": runtime},
                "Action": kms,
                "Resource": ["*"],
                "Condition": {"StringEquals": {"kms:EncryptionContext:rivulet:pipeline": ["ticker"]}}
            }),
        ]
    );
    // Every role: the same actions and conditions as its IAM statements on the key, one for one,
    // and never a key policy statement for a role without conditions.
    for (r, _) in &plan.resources {
        let Planned::Role {
            name, policy: iam, ..
        } = r
        else {
            continue;
        };
        let principal = format!("arn:aws:iam::123456789012:role/{name}");
        let in_key_policy: Vec<(serde_json::Value, serde_json::Value)> =
            key_statements_for(&policy, &principal)
                .into_iter()
                .map(|s| (s["Action"].clone(), s["Condition"].clone()))
                .collect();
        let in_iam: Vec<(serde_json::Value, serde_json::Value)> = iam.to_value()["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["Resource"] == serde_json::json!([key]))
            .map(|s| (s["Action"].clone(), s["Condition"].clone()))
            .collect();
        assert!(!in_iam.is_empty(), "{name} uses the key");
        assert_eq!(in_key_policy, in_iam, "{name}");
        for (_, condition) in &in_key_policy {
            assert!(
                condition.is_object(),
                "{name}: a statement without conditions"
            );
        }
    }
    let delivery = "arn:aws:iam::123456789012:role/rivulet-ticker-firehose-raw";
    assert_eq!(
        key_statements_for(&policy, delivery)[0]["Condition"],
        serde_json::json!({
            "StringEquals": {"kms:ViaService": ["s3.us-east-1.amazonaws.com"]},
            "StringLike": {"kms:EncryptionContext:aws:s3:arn": [
                "arn:aws:s3:::analytics/rawStreamData/*",
                "arn:aws:s3:::analytics/processing-failed/raw/*"
            ]}
        })
    );
}

/// The CloudFormation template carries the same key policy, with the stack's region and account.
#[test]
fn the_templates_key_policy_carries_the_conditions() {
    let plan = desired(&every_key_user(), OFFLINE_ACCOUNT, OFFLINE_REGION, None).unwrap();
    let t = cloudformation(&plan);
    let statements = t["Resources"]["Key"]["Properties"]["KeyPolicy"]["Statement"]
        .as_array()
        .unwrap()
        .clone();
    let runtime = serde_json::json!({"Fn::Sub": "arn:aws:iam::${AWS::AccountId}:role/rivulet-ticker-runtime"});
    let conditions: Vec<&serde_json::Value> = statements
        .iter()
        .filter(|s| s["Principal"]["AWS"] == runtime)
        .map(|s| &s["Condition"])
        .collect();
    assert_eq!(
        conditions,
        [
            &serde_json::json!({"StringEquals": {
                "kms:ViaService": [{"Fn::Sub": "kinesis.${AWS::Region}.amazonaws.com"}],
                "kms:EncryptionContext:aws:kinesis:arn": [
                    {"Fn::Sub": "arn:aws:kinesis:${AWS::Region}:${AWS::AccountId}:stream/ticker-stream"},
                    {"Fn::Sub": "arn:aws:kinesis:${AWS::Region}:${AWS::AccountId}:stream/out-stream"}
                ]
            }}),
            &serde_json::json!({
                "StringEquals": {"kms:ViaService": [{"Fn::Sub": "s3.${AWS::Region}.amazonaws.com"}]},
                "StringLike": {"kms:EncryptionContext:aws:s3:arn": ["arn:aws:s3:::sink-bucket/data/*"]}
            }),
            &serde_json::json!({"StringEquals": {"kms:EncryptionContext:rivulet:pipeline": ["ticker"]}}),
        ]
    );
    // Every statement naming a role has conditions.
    for s in &statements {
        if s["Principal"]["AWS"].to_string().contains(":role/") {
            assert!(s["Condition"].is_object(), "{s}");
        }
    }
}

/// A service that may assume the runtime role (ECS tasks, say) does so only for this account:
/// `aws:SourceAccount`, which the template takes from the stack.
#[test]
fn service_principals_are_trusted_for_this_account_only() {
    let mut i = inputs("s3", true, false);
    i.section.runtime_principals = vec![
        "ecs-tasks.amazonaws.com".into(),
        "arn:aws:iam::210987654321:role/deployer".into(),
    ];
    let plan = desired(&i, "123456789012", "us-east-1", None).unwrap();
    let trust = plan
        .resources
        .iter()
        .find_map(|(r, _)| match r {
            Planned::Role { name, trust, .. } if name.ends_with("-runtime") => Some(trust),
            _ => None,
        })
        .unwrap();
    let t = trust.to_value();
    assert_eq!(
        t["Statement"][0]["Principal"],
        serde_json::json!({"Service": "ecs-tasks.amazonaws.com"})
    );
    assert_eq!(
        t["Statement"][0]["Condition"],
        serde_json::json!({"StringEquals": {"aws:SourceAccount": ["123456789012"]}})
    );
    assert!(
        t["Statement"][1].get("Condition").is_none(),
        "a role of another account is named by its ARN: {t}"
    );
    let plan = desired(&i, OFFLINE_ACCOUNT, OFFLINE_REGION, None).unwrap();
    let template = cloudformation(&plan);
    assert_eq!(
        template["Resources"]["RoleRivuletTickerRuntime"]["Properties"]["AssumeRolePolicyDocument"]
            ["Statement"][0]["Condition"],
        serde_json::json!({"StringEquals": {"aws:SourceAccount": [{"Ref": "AWS::AccountId"}]}})
    );
    assert_eq!(
        template["Resources"]["RoleRivuletTickerFirehoseOut"]["Properties"]
            ["AssumeRolePolicyDocument"]["Statement"][0]["Condition"]["StringEquals"]
            ["sts:ExternalId"],
        serde_json::json!([{"Ref": "AWS::AccountId"}])
    );
    // A wildcard principal from the file fails the lint, and so the plan.
    i.section.runtime_principals = vec!["*".into()];
    let e = desired(&i, "123456789012", "us-east-1", None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("principal `*` has a wildcard"), "{e}");
}

/// A function module stored in the bucket the setup encrypts with the key is read through S3, so
/// the runtime role may decrypt that object (and only it) there, in its IAM policy and in the key
/// policy; a module in another bucket needs no key.
#[test]
fn function_modules_in_an_encrypted_bucket_may_be_decrypted() {
    let mut i = inputs("s3", true, false);
    i.udf_objects = vec![
        ("analytics".into(), "udfs/f.wasm".into()),
        ("elsewhere".into(), "udfs/g.wasm".into()),
    ];
    let key = "arn:aws:kms:us-east-1:123456789012:key/k";
    let plan = desired(&i, "123456789012", "us-east-1", Some(key)).unwrap();
    let want = serde_json::json!({
        "StringEquals": {
            "kms:ViaService": ["s3.us-east-1.amazonaws.com"],
            "kms:EncryptionContext:aws:s3:arn": ["arn:aws:s3:::analytics/udfs/f.wasm"]
        }
    });
    let runtime = plan
        .resources
        .iter()
        .find_map(|(r, _)| match r {
            Planned::Role { name, policy, .. } if name.ends_with("-runtime") => Some(policy),
            _ => None,
        })
        .unwrap()
        .to_value();
    let modules = runtime["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Sid"] == "DecryptFunctionModules")
        .unwrap();
    assert_eq!(modules["Action"], serde_json::json!(["kms:Decrypt"]));
    assert_eq!(modules["Condition"], want);
    let in_key_policy = key_statements_for(
        &key_policy_of(&plan).to_value(),
        "arn:aws:iam::123456789012:role/rivulet-ticker-runtime",
    );
    assert!(
        in_key_policy
            .iter()
            .any(|s| s["Action"] == serde_json::json!(["kms:Decrypt"]) && s["Condition"] == want),
        "{in_key_policy:?}"
    );

    i.udf_objects = vec![("elsewhere".into(), "udfs/g.wasm".into())];
    let plan = desired(&i, "123456789012", "us-east-1", Some(key)).unwrap();
    assert!(!statements_by_role(&plan)["rivulet-ticker-runtime"]
        .contains(&"DecryptFunctionModules".to_owned()));
}
