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
                let mut want = vec!["BucketLevel", "ObjectsUnderPrefixes", "DeliveryLogs"];
                if encryption {
                    want.push("EncryptObjectsThroughS3");
                }
                if destination == "opensearch" {
                    want.extend(["DescribeDomain", "WriteDocuments"]);
                }
                assert_eq!(delivery, &want, "{case}");
                if raw {
                    let r = &roles["rivulet-ticker-firehose-raw"];
                    assert_eq!(r.len(), 3 + encryption as usize, "{case}");
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
        p["Statement"][3]["Condition"]["StringEquals"]["kms:ViaService"],
        serde_json::json!(["s3.us-east-1.amazonaws.com"])
    );
    assert_eq!(
        p["Statement"][3]["Resource"],
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
