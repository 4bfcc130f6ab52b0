//! Policies for every combination of options, without AWS.

use super::*;

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
        envelope_with_setup_key: false,
        other_keys: vec![],
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
    i.envelope_with_setup_key = true;
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
        // src/sink/kinesis_stream.rs
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
