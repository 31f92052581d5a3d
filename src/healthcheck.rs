//! `sagashop healthcheck` (part of the binary, like `loadgen`: it uses the binary's HTTP
//! client): one GET of the node's `/readyz` on this machine. A 2xx answer is healthy (exit 0);
//! anything else, or no answer in time, is not (exit 1, the reason on stderr). The container
//! image runs it as its HEALTHCHECK, having no curl or shell of its own.

use std::time::Duration;

use anyhow::{Context, bail};
use sagashop::config::HealthcheckOptions;

/// Largest part of an unhealthy answer's body quoted in the reason.
const QUOTED_BODY: usize = 4096;

/// Asks the node once; `Ok` when it answered 2xx.
pub async fn run(options: &HealthcheckOptions) -> anyhow::Result<()> {
    let url = options.url();
    let client = awc::Client::builder()
        .timeout(Duration::from_millis(options.timeout_ms))
        .finish();
    let mut response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("no answer from {url}"))?;
    let status = response.status();
    if status.is_success() {
        println!("{url}: {status}");
        return Ok(());
    }
    let body = response.body().limit(QUOTED_BODY).await.unwrap_or_default();
    bail!("{url}: {status} {}", String::from_utf8_lossy(&body).trim())
}
