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

/// Bounds the bytes decoded at once across every OTLP request, HTTP and gRPC: decoding takes
/// memory in proportion to the body, so a crowd of large exports waits in line instead of
/// adding up.
#[derive(Debug)]
pub struct DecodeGate {
    permits: tokio::sync::Semaphore,
    total: u32,
}

/// Bytes one permit of the gate stands for.
const GATE_UNIT: usize = 4096;

impl DecodeGate {
    pub fn new(total_bytes: usize) -> DecodeGate {
        let total = u32::try_from((total_bytes / GATE_UNIT).max(1)).unwrap_or(u32::MAX >> 4);
        DecodeGate {
            permits: tokio::sync::Semaphore::new(total as usize),
            total,
        }
    }

    /// Waits until `bytes` more may be decoded; the permit gives them back when dropped.
    pub async fn acquire(&self, bytes: usize) -> Option<tokio::sync::SemaphorePermit<'_>> {
        let wanted = u32::try_from(bytes.div_ceil(GATE_UNIT))
            .unwrap_or(u32::MAX)
            .clamp(1, self.total);
        self.permits.acquire_many(wanted).await.ok()
    }
}

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
