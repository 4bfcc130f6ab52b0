//! What every AWS client of rivulet shares: how its configuration is loaded and how it retries.

pub(crate) mod s3;

use std::time::Duration;

use crate::{Error, Result};

/// Longest time one attempt of a call may take before it counts as failed (and is retried).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// Loads the AWS configuration from the SDK's default chain (environment, profile, web identity,
/// container and instance credentials), with `region` and `endpoint` overriding it. `key` names
/// the configuration entry in errors.
pub(crate) async fn load_config(
    region: Option<String>,
    endpoint: Option<String>,
    key: &str,
) -> Result<aws_config::SdkConfig> {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region));
    }
    if let Some(url) = endpoint {
        loader = loader.endpoint_url(url);
    }
    let config = loader.load().await;
    if config.region().is_none() {
        return Err(Error::config(
            format!("{key}.region"),
            "no AWS region: set it here or in AWS_REGION / the AWS profile",
        ));
    }
    Ok(config)
}

/// Clients of rivulet do not retry inside the SDK: the source and the sinks retry themselves, with
/// their own back-off, record by record, and count what they retry.
pub(crate) fn retry_config() -> aws_config::retry::RetryConfig {
    aws_config::retry::RetryConfig::disabled()
}

/// The per-attempt timeout of every call.
pub(crate) fn timeout_config() -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .build()
}

/// A client of SDK crate `$sdk` configured from `$shared` (an [`aws_config::SdkConfig`]) with
/// rivulet's retry and timeout settings.
macro_rules! sdk_client {
    ($sdk:ident, $shared:expr) => {
        $sdk::Client::from_conf(
            $sdk::config::Builder::from(&$shared)
                .retry_config($crate::aws::retry_config())
                .timeout_config($crate::aws::timeout_config())
                .build(),
        )
    };
}
pub(crate) use sdk_client;

/// Where an AWS part's client comes from: the one given (`client`), or one built from the SDK's
/// default chain with `region` and `endpoint` overriding it. Every builder of an AWS part (the
/// Kinesis source, the Firehose and Kinesis sinks) holds one, with the setters of
/// [`client_setters`].
#[derive(Debug, Clone)]
pub(crate) struct ClientOptions<C> {
    pub(crate) region: Option<String>,
    pub(crate) endpoint: Option<String>,
    pub(crate) client: Option<C>,
}

impl<C> Default for ClientOptions<C> {
    fn default() -> Self {
        Self {
            region: None,
            endpoint: None,
            client: None,
        }
    }
}

impl<C> ClientOptions<C> {
    /// Options with this region and endpoint (each optional), and no client.
    pub(crate) fn at(region: Option<&String>, endpoint: Option<&String>) -> Self {
        Self {
            region: region.cloned(),
            endpoint: endpoint.cloned(),
            client: None,
        }
    }

    /// The client given, or one `build` makes from the loaded configuration; `key` names the
    /// configuration entry in errors.
    pub(crate) async fn client(
        self,
        key: &str,
        build: impl FnOnce(&aws_config::SdkConfig) -> C,
    ) -> Result<C> {
        match self.client {
            Some(c) => Ok(c),
            None => Ok(build(&load_config(self.region, self.endpoint, key).await?)),
        }
    }
}

/// The builder methods `region`, `endpoint_url` and `client` of an AWS part whose builder keeps
/// its [`ClientOptions`] in the field `aws`.
macro_rules! client_setters {
    ($client:ty) => {
        /// The AWS region (default: from the environment and profile, as the SDK resolves it).
        pub fn region(mut self, region: impl Into<String>) -> Self {
            self.aws.region = Some(region.into());
            self
        }

        /// Sends requests to this endpoint instead of the region's (a VPC endpoint, a local
        /// emulator).
        pub fn endpoint_url(mut self, url: impl Into<String>) -> Self {
            self.aws.endpoint = Some(url.into());
            self
        }

        /// Uses this client as it is configured (credentials, region, retries, HTTP client)
        /// instead of building one.
        pub fn client(mut self, client: $client) -> Self {
            self.aws.client = Some(client);
            self
        }

        /// All three at once (what a pipeline file gives).
        pub(crate) fn client_options(
            mut self,
            options: $crate::aws::ClientOptions<$client>,
        ) -> Self {
            self.aws = options;
            self
        }
    };
}
pub(crate) use client_setters;

/// Exponential back-off with full jitter.
#[derive(Debug)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Starts at `initial`, doubling up to `max`.
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            attempt: 0,
        }
    }

    /// The wait before the next attempt: half of the current ceiling, plus up to as much again
    /// at random.
    pub(crate) fn next(&mut self) -> Duration {
        let ceiling = self
            .initial
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        // Half fixed, half random: never zero, never in lockstep with other readers.
        let half = ceiling / 2;
        half + half.mul_f64(fastrand::f64())
    }

    /// Back to the first wait, after a success.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_ceiling_and_stays_jittered() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let first = b.next();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..20 {
            let d = b.next();
            assert!(d >= Duration::from_millis(50) && d <= Duration::from_secs(2));
        }
        let late = b.next();
        assert!(late >= Duration::from_secs(1), "{late:?}");
        b.reset();
        assert!(b.next() <= Duration::from_millis(100));
    }
}
