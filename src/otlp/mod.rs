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
