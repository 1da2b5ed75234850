//! The OTLP receiver: agents that already speak OpenTelemetry are metered without a line of
//! code changed. Decoding and mapping are pure and run on the request's task; turning
//! cumulative streams into deltas needs memory of earlier requests and runs on the ledger.

pub mod decode;
pub mod mapping;
pub mod streams;

pub use decode::{DecodeError, Encoding, Signal};
pub use mapping::{Defaults, Mapped};
pub use streams::{OtlpState, Resolved, StateRow};

/// The `source` label of everything received over OTLP.
pub const SOURCE: &str = "otlp";

pub mod grpc;

use crate::ledger::{LedgerInput, LedgerSender, OtlpAnswer};

/// Hands one mapped request to the ledger and waits for its verdict; the error means nothing
/// was recorded and the exporter should retry.
pub async fn submit(ledger: &LedgerSender, mapped: Mapped) -> Result<OtlpAnswer, String> {
    let (reply, answered) = tokio::sync::oneshot::channel();
    match ledger.send(LedgerInput::Otlp { mapped, reply }).await {
        Ok(()) => answered
            .await
            .unwrap_or_else(|_| Err("the ledger stopped".to_string())),
        Err(_) => Err("the ledger stopped".to_string()),
    }
}

/// Most rejection messages quoted in one partial success.
const QUOTED_REJECTIONS: usize = 5;

/// The partial-success count and message of an answer: the first few problems, then how many
/// more.
pub fn partial_success(answer: &OtlpAnswer) -> (u64, String) {
    let mut message = answer
        .rejected
        .iter()
        .take(QUOTED_REJECTIONS)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if answer.rejected.len() > QUOTED_REJECTIONS {
        message.push_str(&format!(
            "; and {} more",
            answer.rejected.len() - QUOTED_REJECTIONS
        ));
    }
    (
        u64::try_from(answer.rejected.len()).unwrap_or(u64::MAX),
        message,
    )
}
