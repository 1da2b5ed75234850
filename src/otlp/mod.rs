//! OTLP, pure: decoding, mapping to usage, and the cumulative-stream state the ledger keeps.
//! The receivers (HTTP and gRPC) are sources and live in `api`; nothing here talks to the
//! ledger or the network.

pub mod decode;
pub mod mapping;
pub mod streams;

pub use decode::{DecodeError, Encoding, Signal};
pub use mapping::{Defaults, Mapped};
pub use streams::{OtlpState, Resolved, StateRow};

/// The `source` label of everything received over OTLP.
pub const SOURCE: &str = "otlp";

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
