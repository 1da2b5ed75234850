//! One integration test binary: every test drives the real `costmeter` binary over HTTP and
//! real processes.

// Tests signal and reap real processes through libc.
#![allow(unsafe_code)]

mod admission;
mod agents;
mod budgets;
mod cli;
mod events;
mod exposition;
mod faults;
mod fleet;
mod holds;
mod hostile;
mod layout;
mod neighbours;
mod ops;
mod otlp;
mod page;
mod proxy;
mod runs;
mod sampler;
mod spans;
mod tls;
mod util;
mod verbs;
