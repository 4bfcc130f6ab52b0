//! Deleting: [`destroy`] and its steps, one per kind of resource.

use super::{ApplyReport, Call, Env};
use crate::setup::{Planned, SetupInputs, TAG_PIPELINE};
use crate::Result;

/// Removes what rivulet created for the pipeline file (everything tagged with its name), in the
/// reverse order of creation. A stream or bucket that existed before is never touched; a bucket
/// that still holds objects is kept (and said so), since deleting it would delete data. The key
/// is scheduled for deletion (7 days, the shortest KMS allows) and its alias removed.
pub async fn destroy(config: &crate::PipelineConfig) -> Result<ApplyReport> {
    let inputs = config.setup_inputs()?;
    let env = Env::connect(&inputs).await?;
    let found = env.discover(&inputs).await?;
    let plan = env.plan(&inputs, &found).await?;
    let mut changes = Vec::new();
    let p = inputs.pipeline.as_str();
    for (r, _) in plan.resources.iter().rev() {
        match r {
            Planned::DeliveryStream { name, .. } => {
                env.delete_delivery_stream(p, name, &mut changes).await?
            }
            Planned::Role { name, .. } => env.delete_role(p, name, &mut changes).await?,
            Planned::Stream { name, .. } => env.delete_stream(p, name, &mut changes).await?,
            Planned::Bucket { name, .. } => env.delete_bucket(p, name, &mut changes).await?,
            Planned::Key { alias, .. } => {
                env.delete_key(&inputs, alias, found.key_arn.as_deref(), &mut changes)
                    .await?
            }
        }
    }
    Ok(ApplyReport { plan, changes })
}

/// The steps of [`destroy`]: each deletes a resource when it carries the pipeline's tag.
impl Env {
    async fn delete_delivery_stream(
        &self,
        p: &str,
        name: &str,
        changes: &mut Vec<String>,
    ) -> Result<()> {
        if self
            .delivery(name)
            .await?
            .is_some_and(|d| d.owner.as_deref() == Some(p))
        {
            self.firehose
                .delete_delivery_stream()
                .delivery_stream_name(name)
                .send()
                .await
                .or_fail("firehose:DeleteDeliveryStream")?;
            changes.push(format!("deleted Firehose delivery stream {name}"));
        }
        Ok(())
    }

    /// Deletes the role's inline policies, then the role.
    async fn delete_role(&self, p: &str, name: &str, changes: &mut Vec<String>) -> Result<()> {
        let ours = self
            .role(name)
            .await?
            .is_some_and(|(o, _)| o.as_deref() == Some(p));
        if !ours {
            return Ok(());
        }
        let policies = self
            .iam
            .list_role_policies()
            .role_name(name)
            .send()
            .await
            .or_fail("iam:ListRolePolicies")?;
        for pn in policies.policy_names() {
            self.iam
                .delete_role_policy()
                .role_name(name)
                .policy_name(pn)
                .send()
                .await
                .or_fail("iam:DeleteRolePolicy")?;
        }
        self.iam
            .delete_role()
            .role_name(name)
            .send()
            .await
            .or_fail("iam:DeleteRole")?;
        changes.push(format!("deleted IAM role {name}"));
        Ok(())
    }

    async fn delete_stream(&self, p: &str, name: &str, changes: &mut Vec<String>) -> Result<()> {
        if self
            .stream(name)
            .await?
            .is_some_and(|s| s.owner.as_deref() == Some(p))
        {
            self.kinesis
                .delete_stream()
                .stream_name(name)
                .enforce_consumer_deletion(true)
                .send()
                .await
                .or_fail("kinesis:DeleteStream")?;
            changes.push(format!("deleted Kinesis stream {name}"));
        }
        Ok(())
    }

    /// Deletes the bucket when it is empty; keeps it (and says so) when it holds objects.
    async fn delete_bucket(&self, p: &str, name: &str, changes: &mut Vec<String>) -> Result<()> {
        if self.bucket_owner(name).await?.as_deref() != Some(p) {
            return Ok(());
        }
        let objects = self
            .s3
            .list_objects_v2()
            .bucket(name)
            .max_keys(1)
            .send()
            .await
            .or_fail("s3:ListObjectsV2")?;
        if objects.key_count().unwrap_or(0) > 0 {
            changes.push(format!(
                "kept S3 bucket {name}: it holds objects (empty it, then destroy \
                 again, to delete it)"
            ));
        } else {
            self.s3
                .delete_bucket()
                .bucket(name)
                .send()
                .await
                .or_fail("s3:DeleteBucket")?;
            changes.push(format!("deleted S3 bucket {name}"));
        }
        Ok(())
    }

    /// Schedules the key's deletion and removes its alias, unless data that only it can open is
    /// kept (a kept bucket's objects, sinks' sealed output).
    async fn delete_key(
        &self,
        inputs: &SetupInputs,
        alias: &str,
        key_arn: Option<&str>,
        changes: &mut Vec<String>,
    ) -> Result<()> {
        let Some(arn) = key_arn else { return Ok(()) };
        let kept_data = changes.iter().any(|c| c.starts_with("kept S3 bucket"));
        if kept_data || crate::setup::envelope_with_setup_key(inputs) {
            changes.push(format!(
                "kept KMS key {alias}: {}",
                if kept_data {
                    "a kept bucket's objects are encrypted with it"
                } else {
                    "sinks sealed output with it (envelope encryption), which only it \
                     can open; schedule its deletion yourself when that output is gone"
                }
            ));
            return Ok(());
        }
        let tags = self
            .kms
            .list_resource_tags()
            .key_id(arn)
            .send()
            .await
            .or_fail("kms:ListResourceTags")?;
        let ours = tags
            .tags()
            .iter()
            .any(|t| t.tag_key() == TAG_PIPELINE && t.tag_value() == inputs.pipeline);
        if !ours {
            return Ok(());
        }
        self.kms
            .delete_alias()
            .alias_name(alias)
            .send()
            .await
            .or_fail("kms:DeleteAlias")?;
        // By key id, which every KMS implementation takes (moto refuses ARNs here).
        let key_id = arn.rsplit('/').next().unwrap_or(arn);
        self.kms
            .schedule_key_deletion()
            .key_id(key_id)
            .pending_window_in_days(7)
            .send()
            .await
            .or_fail("kms:ScheduleKeyDeletion")?;
        changes.push(format!(
            "scheduled KMS key {arn} for deletion in 7 days and removed {alias}"
        ));
        Ok(())
    }
}
