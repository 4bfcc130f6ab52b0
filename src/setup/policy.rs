//! IAM policy documents as typed values, serialised to the JSON IAM reads, and the lint that every
//! generated document passes.

use std::collections::BTreeMap;

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

/// A policy document (identity, trust or key policy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PolicyDocument {
    /// Always `2012-10-17`.
    pub version: &'static str,
    /// The statements.
    #[serde(rename = "Statement")]
    pub statements: Vec<Statement>,
}

impl PolicyDocument {
    /// A document of `statements`.
    pub fn new(statements: Vec<Statement>) -> Self {
        Self {
            version: "2012-10-17",
            statements,
        }
    }

    /// The document as IAM's JSON, pretty-printed.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).expect("a policy document serialises")
    }

    /// The document as compact JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a policy document serialises")
    }

    /// The document as a JSON value (for comparing with what AWS returns).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a policy document serialises")
    }
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Effect {
    /// `Allow`.
    Allow,
    /// `Deny`.
    Deny,
}

/// Who a trust or key policy statement is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// An AWS service, e.g. `firehose.amazonaws.com`.
    Service(String),
    /// An account or IAM principal ARN, e.g. `arn:aws:iam::123456789012:root`.
    Aws(String),
    /// `Principal: "*"`: anyone at all. rivulet never generates it; [`lint`] refuses it.
    Anyone,
}

impl Serialize for Principal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (kind, v) = match self {
            Principal::Service(v) => ("Service", v),
            Principal::Aws(v) => ("AWS", v),
            Principal::Anyone => return s.serialize_str("*"),
        };
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry(kind, v)?;
        m.end()
    }
}

/// A resource a statement is about: an ARN, or `*` where AWS requires it (see
/// [`Resource::AnyKeyPolicy`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Resource {
    /// A specific ARN (possibly ending in `/*` for the objects under a bucket prefix).
    Arn(String),
    /// `*` in a KMS key policy: there it means "this key", and AWS requires it (a key policy
    /// cannot name its own key's ARN before the key exists).
    AnyKeyPolicy,
}

impl Serialize for Resource {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Resource::Arn(a) => s.serialize_str(a),
            Resource::AnyKeyPolicy => s.serialize_str("*"),
        }
    }
}

/// Condition operator → key → values, as IAM writes conditions.
pub type Conditions = BTreeMap<String, BTreeMap<String, Vec<String>>>;

/// One statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Statement {
    /// A statement id, unique within the document.
    pub sid: String,
    /// Allow or deny.
    pub effect: Effect,
    /// For trust and key policies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<Principal>,
    /// Actions, `service:Action`.
    #[serde(rename = "Action")]
    pub actions: Vec<String>,
    /// Resources; empty in trust policies.
    #[serde(rename = "Resource", skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<Resource>,
    /// Conditions.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub condition: Conditions,
}

impl Statement {
    /// An `Allow` statement of `actions` on `resources`.
    pub fn allow(sid: &str, actions: &[&str], resources: Vec<Resource>) -> Self {
        Self {
            sid: sid.to_owned(),
            effect: Effect::Allow,
            principal: None,
            actions: actions.iter().map(|a| (*a).to_owned()).collect(),
            resources,
            condition: BTreeMap::new(),
        }
    }

    /// The statement with a principal.
    pub fn with_principal(mut self, principal: Principal) -> Self {
        self.principal = Some(principal);
        self
    }

    /// The statement with one more condition `operator: {key: values}`.
    pub fn with_condition(mut self, operator: &str, key: &str, values: Vec<String>) -> Self {
        self.condition
            .entry(operator.to_owned())
            .or_default()
            .insert(key.to_owned(), values);
        self
    }
}

/// One ARN as a resource.
pub fn arn(a: impl Into<String>) -> Resource {
    Resource::Arn(a.into())
}

/// What kind of document a lint checks: `*` resources are allowed only in key policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentKind {
    /// An identity policy attached to a role.
    Identity,
    /// A role's trust policy.
    Trust,
    /// A KMS key policy.
    KeyPolicy,
}

/// Checks a document for what least privilege forbids, and returns every problem:
/// - `Action: "*"`, a whole service (`s3:*`), or any other action with a wildcard (`*` or `?`
///   anywhere: `kms:Create*`, `s3:Put*`), or an action that is not `service:Action`;
/// - `Resource: "*"`, except in a key policy (where it means the key itself);
/// - a resource that is not an ARN, a resource with `?`, or a `*` anywhere but at the end of a
///   path under a named resource (`arn:aws:s3:::bucket/prefix/*` passes; `arn:aws:s3:::*`,
///   `…:stream/*` and `arn:aws:kinesis:*:…` do not);
/// - `Principal: "*"`, or a principal with a wildcard (`{"AWS": "*"}`);
/// - a trust statement for an AWS service without `StringEquals` on `aws:SourceAccount`, or, for
///   Firehose, which names the account it acts for as the external ID, on `sts:ExternalId` (so
///   that the service assumes the role only for this account's resources);
/// - `iam:PassRole` without a specific role ARN;
/// - an identity statement with no resource, or a trust or key policy statement without a
///   principal;
/// - duplicate statement ids.
pub fn lint(doc: &PolicyDocument, kind: DocumentKind) -> Vec<String> {
    let mut problems = Vec::new();
    let mut sids = std::collections::HashSet::new();
    let wildcard = |s: &str| s.contains(['*', '?']);
    for st in &doc.statements {
        let at = format!("statement `{}`", st.sid);
        if !sids.insert(st.sid.as_str()) {
            problems.push(format!("{at}: duplicate statement id"));
        }
        if st.actions.is_empty() {
            problems.push(format!("{at}: no action"));
        }
        for a in &st.actions {
            if wildcard(a) {
                problems.push(format!(
                    "{at}: action `{a}` has a wildcard: name each action instead"
                ));
            } else if !a.contains(':') {
                problems.push(format!("{at}: action `{a}` is not `service:Action`"));
            }
        }
        match &st.principal {
            Some(Principal::Anyone) => {
                problems.push(format!("{at}: `Principal: \"*\"` lets anyone in"));
            }
            Some(Principal::Aws(p) | Principal::Service(p)) if wildcard(p) => {
                problems.push(format!("{at}: principal `{p}` has a wildcard"));
            }
            _ => {}
        }
        match kind {
            DocumentKind::Trust => {
                if st.principal.is_none() {
                    problems.push(format!("{at}: a trust statement needs a principal"));
                }
                if let Some(Principal::Service(service)) = &st.principal {
                    let equals = |key: &str| {
                        st.condition
                            .get("StringEquals")
                            .and_then(|c| c.get(key))
                            .is_some_and(|v| !v.is_empty() && v.iter().all(|a| !a.is_empty()))
                    };
                    let firehose = service == "firehose.amazonaws.com";
                    if !(equals("aws:SourceAccount") || firehose && equals("sts:ExternalId")) {
                        problems.push(format!(
                            "{at}: a trust statement for service `{service}` needs a \
                             `StringEquals` condition on `aws:SourceAccount`{}",
                            if firehose { " or `sts:ExternalId`" } else { "" }
                        ));
                    }
                }
            }
            DocumentKind::Identity => {
                if st.resources.is_empty() {
                    problems.push(format!("{at}: no resource"));
                }
                if st.resources.contains(&Resource::AnyKeyPolicy) {
                    problems.push(format!(
                        "{at}: `Resource: \"*\"` is allowed only in a key policy"
                    ));
                }
            }
            DocumentKind::KeyPolicy => {
                if st.principal.is_none() {
                    problems.push(format!("{at}: a key policy statement needs a principal"));
                }
            }
        }
        for r in &st.resources {
            if let Resource::Arn(a) = r {
                if !a.starts_with("arn:") {
                    problems.push(format!("{at}: resource `{a}` is not an ARN"));
                } else if a.contains('?') {
                    problems.push(format!("{at}: resource `{a}` has a `?` wildcard"));
                } else if a.contains('*') && !narrow_wildcard(a) {
                    problems.push(format!(
                        "{at}: resource `{a}` has a wildcard that is not confined to the objects \
                         under a named prefix"
                    ));
                }
            }
        }
        if st.actions.iter().any(|a| a == "iam:PassRole")
            && !st
                .resources
                .iter()
                .all(|r| matches!(r, Resource::Arn(a) if a.contains(":role/") && !a.ends_with('*')))
        {
            problems.push(format!(
                "{at}: `iam:PassRole` must name the roles it passes"
            ));
        }
        if st.actions.iter().any(|a| a == "iam:PassRole") && st.resources.is_empty() {
            problems.push(format!("{at}: `iam:PassRole` without a resource"));
        }
    }
    problems
}

/// A wildcard that only ends a path under a named resource: `arn:aws:s3:::bucket/prefix*`, or
/// `…:domain/name/*`. Not `arn:aws:s3:::*`, `…:stream/*` or `…:role/*`.
fn narrow_wildcard(a: &str) -> bool {
    if a.matches('*').count() != 1 || !a.ends_with('*') {
        return false;
    }
    let mut parts = a.splitn(6, ':');
    let service = parts.nth(2).unwrap_or("");
    let resource = parts.nth(2).unwrap_or("");
    let segments: Vec<&str> = resource.split('/').collect();
    let named = |n: usize| segments.len() > n && segments[..n].iter().all(|s| !s.is_empty());
    if service == "s3" {
        named(1)
    } else {
        named(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_like_iam() {
        let doc = PolicyDocument::new(vec![Statement::allow(
            "ReadSource",
            &["kinesis:GetRecords"],
            vec![arn("arn:aws:kinesis:us-east-1:123456789012:stream/s")],
        )
        .with_condition(
            "StringEquals",
            "kms:ViaService",
            vec!["kinesis.us-east-1.amazonaws.com".into()],
        )]);
        assert_eq!(
            doc.to_value(),
            serde_json::json!({
                "Version": "2012-10-17",
                "Statement": [{
                    "Sid": "ReadSource",
                    "Effect": "Allow",
                    "Action": ["kinesis:GetRecords"],
                    "Resource": ["arn:aws:kinesis:us-east-1:123456789012:stream/s"],
                    "Condition": {"StringEquals": {"kms:ViaService": ["kinesis.us-east-1.amazonaws.com"]}}
                }]
            })
        );
        let trust = PolicyDocument::new(vec![Statement::allow(
            "Assume",
            &["sts:AssumeRole"],
            vec![],
        )
        .with_principal(Principal::Service("firehose.amazonaws.com".into()))
        .with_condition(
            "StringEquals",
            "aws:SourceAccount",
            vec!["123456789012".into()],
        )]);
        assert_eq!(
            trust.to_value()["Statement"][0]["Principal"],
            serde_json::json!({"Service": "firehose.amazonaws.com"})
        );
        assert!(lint(&trust, DocumentKind::Trust).is_empty());
        let anyone = Statement::allow("Assume", &["sts:AssumeRole"], vec![])
            .with_principal(Principal::Anyone);
        assert_eq!(
            PolicyDocument::new(vec![anyone]).to_value()["Statement"][0]["Principal"],
            serde_json::json!("*")
        );
    }

    /// One shape per row, each refused with its own problem; then documents of every kind that
    /// pass.
    #[test]
    fn the_lint_refuses_each_shape_with_its_problem() {
        use DocumentKind::{Identity, KeyPolicy, Trust};
        let object = || vec![arn("arn:aws:s3:::b/p/*")];
        let identity =
            |actions: &[&str], resources: Vec<Resource>| Statement::allow("A", actions, resources);
        let firehose = || {
            Statement::allow("A", &["sts:AssumeRole"], vec![])
                .with_principal(Principal::Service("firehose.amazonaws.com".into()))
        };
        let key_use = |p: Principal| {
            Statement::allow("A", &["kms:Decrypt"], vec![Resource::AnyKeyPolicy]).with_principal(p)
        };
        let cases: Vec<(&str, DocumentKind, Statement, &str)> = vec![
            (
                "every action",
                Identity,
                identity(&["*"], object()),
                "statement `A`: action `*` has a wildcard: name each action instead",
            ),
            (
                "a whole service",
                Identity,
                identity(&["s3:*"], object()),
                "statement `A`: action `s3:*` has a wildcard: name each action instead",
            ),
            (
                "a partial action wildcard (kms)",
                KeyPolicy,
                Statement::allow("A", &["kms:Create*"], vec![Resource::AnyKeyPolicy])
                    .with_principal(Principal::Aws("arn:aws:iam::1:root".into())),
                "statement `A`: action `kms:Create*` has a wildcard: name each action instead",
            ),
            (
                "a partial action wildcard (s3)",
                Identity,
                identity(&["s3:Put*"], object()),
                "statement `A`: action `s3:Put*` has a wildcard: name each action instead",
            ),
            (
                "`*` inside an action",
                Identity,
                identity(&["kinesis:*Records"], object()),
                "statement `A`: action `kinesis:*Records` has a wildcard: name each action instead",
            ),
            (
                "`?` in an action",
                Identity,
                identity(&["s3:GetObjec?"], object()),
                "statement `A`: action `s3:GetObjec?` has a wildcard: name each action instead",
            ),
            (
                "an action without its service",
                Identity,
                identity(&["GetObject"], object()),
                "statement `A`: action `GetObject` is not `service:Action`",
            ),
            (
                "`?` in a resource",
                Identity,
                identity(&["s3:GetObject"], vec![arn("arn:aws:s3:::b/p?/*")]),
                "statement `A`: resource `arn:aws:s3:::b/p?/*` has a `?` wildcard",
            ),
            (
                "`?` in a resource without `*`",
                Identity,
                identity(
                    &["kinesis:GetRecords"],
                    vec![arn("arn:aws:kinesis:r:1:stream/s?")],
                ),
                "statement `A`: resource `arn:aws:kinesis:r:1:stream/s?` has a `?` wildcard",
            ),
            (
                "`*` for every bucket",
                Identity,
                identity(&["s3:GetObject"], vec![arn("arn:aws:s3:::*")]),
                "statement `A`: resource `arn:aws:s3:::*` has a wildcard that is not confined to \
                 the objects under a named prefix",
            ),
            (
                "`*` for every region",
                Identity,
                identity(
                    &["kinesis:GetRecords"],
                    vec![arn("arn:aws:kinesis:*:1:stream/s")],
                ),
                "statement `A`: resource `arn:aws:kinesis:*:1:stream/s` has a wildcard that is \
                 not confined to the objects under a named prefix",
            ),
            (
                "`Resource: \"*\"` in an identity policy",
                Identity,
                identity(&["kms:Decrypt"], vec![Resource::AnyKeyPolicy]),
                "statement `A`: `Resource: \"*\"` is allowed only in a key policy",
            ),
            (
                "`Principal: \"*\"` in a trust policy",
                Trust,
                Statement::allow("A", &["sts:AssumeRole"], vec![])
                    .with_principal(Principal::Anyone),
                "statement `A`: `Principal: \"*\"` lets anyone in",
            ),
            (
                "`Principal: \"*\"` in a key policy",
                KeyPolicy,
                key_use(Principal::Anyone),
                "statement `A`: `Principal: \"*\"` lets anyone in",
            ),
            (
                "`{\"AWS\": \"*\"}` in a key policy",
                KeyPolicy,
                key_use(Principal::Aws("*".into())),
                "statement `A`: principal `*` has a wildcard",
            ),
            (
                "`{\"AWS\": \"*\"}` in a trust policy",
                Trust,
                Statement::allow("A", &["sts:AssumeRole"], vec![])
                    .with_principal(Principal::Aws("*".into())),
                "statement `A`: principal `*` has a wildcard",
            ),
            (
                "a service trusted without a condition",
                Trust,
                firehose(),
                "statement `A`: a trust statement for service `firehose.amazonaws.com` needs a \
                 `StringEquals` condition on `aws:SourceAccount` or `sts:ExternalId`",
            ),
            (
                "another service trusted with sts:ExternalId only",
                Trust,
                Statement::allow("A", &["sts:AssumeRole"], vec![])
                    .with_principal(Principal::Service("ecs-tasks.amazonaws.com".into()))
                    .with_condition("StringEquals", "sts:ExternalId", vec!["1".into()]),
                "statement `A`: a trust statement for service `ecs-tasks.amazonaws.com` needs a \
                 `StringEquals` condition on `aws:SourceAccount`",
            ),
            (
                "a service trusted with aws:SourceAccount under StringLike",
                Trust,
                firehose().with_condition("StringLike", "aws:SourceAccount", vec!["1".into()]),
                "statement `A`: a trust statement for service `firehose.amazonaws.com` needs a \
                 `StringEquals` condition on `aws:SourceAccount` or `sts:ExternalId`",
            ),
            (
                "a service trusted with an empty aws:SourceAccount",
                Trust,
                firehose().with_condition("StringEquals", "aws:SourceAccount", vec![]),
                "statement `A`: a trust statement for service `firehose.amazonaws.com` needs a \
                 `StringEquals` condition on `aws:SourceAccount` or `sts:ExternalId`",
            ),
        ];
        for (shape, kind, statement, problem) in cases {
            assert_eq!(
                lint(&PolicyDocument::new(vec![statement]), kind),
                vec![problem.to_owned()],
                "{shape}"
            );
        }

        let account = || vec!["123456789012".to_owned()];
        let trust = PolicyDocument::new(vec![
            firehose().with_condition("StringEquals", "sts:ExternalId", account()),
            Statement::allow("B", &["sts:AssumeRole"], vec![])
                .with_principal(Principal::Aws("arn:aws:iam::123456789012:root".into())),
        ]);
        assert_eq!(lint(&trust, Trust), Vec::<String>::new());
        let identity = PolicyDocument::new(vec![
            Statement::allow(
                "A",
                &["s3:GetObject", "s3:PutObject"],
                vec![arn("arn:aws:s3:::b/p/*"), arn("arn:aws:s3:::b/q/*")],
            ),
            Statement::allow(
                "B",
                &["kms:Decrypt", "kms:GenerateDataKey"],
                vec![arn("arn:aws:kms:r:123456789012:key/k")],
            )
            .with_condition(
                "StringEquals",
                "kms:ViaService",
                vec!["s3.r.amazonaws.com".into()],
            ),
        ]);
        assert_eq!(lint(&identity, Identity), Vec::<String>::new());
        let key = PolicyDocument::new(vec![key_use(Principal::Aws(
            "arn:aws:iam::123456789012:role/r".into(),
        ))
        .with_condition(
            "StringEquals",
            "kms:ViaService",
            vec!["s3.r.amazonaws.com".into()],
        )]);
        assert_eq!(lint(&key, KeyPolicy), Vec::<String>::new());
    }

    #[test]
    fn the_lint_refuses_hand_made_bad_policies() {
        let bad = |st: Statement, kind| lint(&PolicyDocument::new(vec![st]), kind);
        let any = || vec![arn("*")];
        assert!(!bad(
            Statement::allow("A", &["*"], vec![arn("arn:aws:s3:::b")]),
            DocumentKind::Identity
        )
        .is_empty());
        assert!(!bad(
            Statement::allow("A", &["s3:*"], vec![arn("arn:aws:s3:::b")]),
            DocumentKind::Identity
        )
        .is_empty());
        assert!(!bad(
            Statement::allow("A", &["s3:GetObject"], any()),
            DocumentKind::Identity
        )
        .is_empty());
        assert!(!bad(
            Statement::allow("A", &["s3:GetObject"], vec![Resource::AnyKeyPolicy]),
            DocumentKind::Identity
        )
        .is_empty());
        assert!(!bad(
            Statement::allow("A", &["s3:GetObject"], vec![]),
            DocumentKind::Identity
        )
        .is_empty());
        assert!(!bad(
            Statement::allow("A", &["iam:PassRole"], vec![]),
            DocumentKind::Identity
        )
        .is_empty());
        assert!(!bad(
            Statement::allow("A", &["iam:PassRole"], vec![arn("arn:aws:iam::1:role/*")]),
            DocumentKind::Identity
        )
        .is_empty());
        assert!(!bad(
            Statement::allow("A", &["sts:AssumeRole"], vec![]),
            DocumentKind::Trust
        )
        .is_empty());
        // The documented exception: `*` in a key policy is the key itself.
        assert!(bad(
            Statement::allow("Admin", &["kms:DescribeKey"], vec![Resource::AnyKeyPolicy])
                .with_principal(Principal::Aws("arn:aws:iam::1:root".into())),
            DocumentKind::KeyPolicy
        )
        .is_empty());
        assert!(bad(
            Statement::allow("A", &["iam:PassRole"], vec![arn("arn:aws:iam::1:role/r")]),
            DocumentKind::Identity
        )
        .is_empty());
        for wide in [
            "arn:aws:s3:::*",
            "arn:aws:kinesis:r:1:stream/*",
            "arn:aws:s3:::b*/x",
            "stream-name",
        ] {
            let st = Statement::allow("A", &["s3:GetObject"], vec![arn(wide)]);
            assert!(!bad(st, DocumentKind::Identity).is_empty(), "{wide}");
        }
        for narrow in [
            "arn:aws:s3:::b/prefix/*",
            "arn:aws:s3:::b/*",
            "arn:aws:es:r:1:domain/d/*",
        ] {
            let st = Statement::allow("A", &["s3:GetObject"], vec![arn(narrow)]);
            assert!(bad(st, DocumentKind::Identity).is_empty(), "{narrow}");
        }
        let dup = PolicyDocument::new(vec![
            Statement::allow("A", &["s3:GetObject"], vec![arn("arn:aws:s3:::b/*")]),
            Statement::allow("A", &["s3:PutObject"], vec![arn("arn:aws:s3:::b/*")]),
        ]);
        assert_eq!(lint(&dup, DocumentKind::Identity).len(), 1);
    }
}
