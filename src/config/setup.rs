//! What `rivulet setup` reads from a pipeline file.

use super::*;

#[cfg(feature = "setup")]
/// What the pipeline file says about resources, for `rivulet setup` (which interprets it).
#[derive(Debug, Clone)]
pub(crate) struct SetupInputs {
    pub(crate) pipeline: String,
    pub(crate) section: SetupSection,
    /// The Kinesis source stream, and the region and endpoint the source names.
    pub(crate) source: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) endpoint_url: Option<String>,
    /// Firehose sinks' delivery streams (error output included), and the raw copy's.
    pub(crate) deliveries: Vec<String>,
    pub(crate) raw_delivery: Option<String>,
    /// Kinesis sinks' streams.
    pub(crate) output_streams: Vec<String>,
    /// S3 sinks' bucket and prefix (raw copy and error output included).
    pub(crate) s3_sinks: Vec<(String, String)>,
    /// The KMS key ids sinks seal their output with (`encryption.kms_key_id`), each once: setup
    /// tells its own key's alias from keys it does not manage.
    pub(crate) envelope_keys: Vec<String>,
    /// `[[udfs]]` modules loaded from S3: bucket and key.
    pub(crate) udf_objects: Vec<(String, String)>,
}

#[cfg(feature = "setup")]
impl PipelineConfig {
    /// What `rivulet setup` reads from the file: the streams, delivery streams, buckets and keys
    /// its source and sinks name, and the `[setup]` table.
    pub(crate) fn setup_inputs(&self) -> Result<SetupInputs> {
        let section = self.setup.clone().unwrap_or_default();
        let mut inputs = SetupInputs {
            pipeline: self.name().to_owned(),
            source: None,
            region: section.region.clone(),
            endpoint_url: section.endpoint_url.clone(),
            section,
            deliveries: Vec::new(),
            raw_delivery: None,
            output_streams: Vec::new(),
            s3_sinks: Vec::new(),
            envelope_keys: Vec::new(),
            udf_objects: self
                .udfs
                .iter()
                .filter_map(|u| u.path.strip_prefix("s3://")?.split_once('/'))
                .map(|(b, k)| (b.to_owned(), k.to_owned()))
                .collect(),
        };
        if let SourceConfig::Kinesis {
            stream,
            region,
            endpoint_url,
            ..
        } = &self.source
        {
            inputs.source = Some(stream.clone());
            inputs.region = inputs.region.or_else(|| region.clone());
            inputs.endpoint_url = inputs.endpoint_url.or_else(|| endpoint_url.clone());
        }
        let sinks = self
            .sinks
            .iter()
            .map(|s| (s, false))
            .chain(self.error_output.iter().map(|s| (s, false)))
            .chain(self.raw_copy.iter().map(|s| (s, true)));
        for (sink, raw) in sinks {
            let encryption = match sink {
                SinkConfig::Firehose {
                    delivery_stream,
                    encryption,
                    ..
                } => {
                    if raw {
                        inputs.raw_delivery = Some(delivery_stream.clone());
                    } else if !inputs.deliveries.contains(delivery_stream) {
                        inputs.deliveries.push(delivery_stream.clone());
                    }
                    encryption
                }
                SinkConfig::Kinesis {
                    stream_name,
                    encryption,
                    ..
                } => {
                    if !inputs.output_streams.contains(stream_name) {
                        inputs.output_streams.push(stream_name.clone());
                    }
                    encryption
                }
                SinkConfig::S3 {
                    bucket,
                    prefix,
                    encryption,
                    ..
                } => {
                    inputs.s3_sinks.push((bucket.clone(), prefix.clone()));
                    encryption
                }
                SinkConfig::File { encryption, .. } => encryption,
                SinkConfig::Stdout { .. } | SinkConfig::Stderr { .. } => &None,
            };
            if let Some(e) = encryption {
                if !inputs.envelope_keys.contains(&e.kms_key_id) {
                    inputs.envelope_keys.push(e.kms_key_id.clone());
                }
            }
        }
        Ok(inputs)
    }
}
