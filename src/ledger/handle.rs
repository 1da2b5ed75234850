//! The typed way to talk to the ledger: one async method per write, one error type for
//! "no answer", mapped to an HTTP status in one place (`api::unavailable`). Fire-and-forget
//! inputs (refusals, kill orders) go through [`LedgerHandle::tell`]. Reads — budget states,
//! the price table's health — never enter the inbox: they are answered from the [`View`]
//! the ledger publishes after each batch and each tick.

use super::*;
use crate::budget::BudgetStatus;

/// Why the ledger could not answer: nothing of the request was recorded, and the sender may
/// retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerUnavailable {
    #[error("the ledger stopped")]
    Stopped,
    #[error("the store cannot take writes ({0})")]
    Store(String),
}

/// What the ledger last published: budget states as of `at_ms` (a batch, or the tick at
/// most [`TICK`] ago) and the price table's health.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub at_ms: i64,
    pub budgets: Vec<BudgetStatus>,
    pub pricing: Arc<PricingStatus>,
}

/// The view, shared: the ledger swaps in a new one under a short write lock.
pub type SharedView = Arc<std::sync::RwLock<Arc<View>>>;

#[derive(Clone)]
pub struct LedgerHandle {
    sender: LedgerSender,
    view: SharedView,
}

impl LedgerHandle {
    pub fn new(sender: LedgerSender, view: SharedView) -> LedgerHandle {
        LedgerHandle { sender, view }
    }

    /// The last published view; never waits for the ledger.
    pub fn view(&self) -> Arc<View> {
        self.view
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    async fn ask<T>(
        &self,
        input: impl FnOnce(oneshot::Sender<T>) -> LedgerInput,
    ) -> Result<T, LedgerUnavailable> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(input(reply))
            .await
            .map_err(|_| LedgerUnavailable::Stopped)?;
        answer.await.map_err(|_| LedgerUnavailable::Stopped)
    }

    /// Stores validated events; what became of each.
    pub async fn events(
        &self,
        source: &'static str,
        events: Vec<Event>,
    ) -> Result<EventsAnswer, LedgerUnavailable> {
        self.ask(|reply| LedgerInput::Events {
            source,
            events,
            reply,
        })
        .await?
    }

    /// One mapped OTLP request.
    pub async fn otlp(&self, mapped: crate::otlp::Mapped) -> Result<OtlpAnswer, LedgerUnavailable> {
        self.ask(|reply| LedgerInput::Otlp { mapped, reply })
            .await?
    }

    /// Asks to make a proxied call: admitted on a reservation, or refused by a budget.
    pub async fn reserve(
        &self,
        ask: CallAsk,
    ) -> Result<Result<Admission, BudgetRefusal>, LedgerUnavailable> {
        self.ask(|reply| LedgerInput::Reserve { ask, reply }).await
    }

    /// A proxied call ended: its usage, then its reservation released.
    pub async fn settle(
        &self,
        reservation: Option<u64>,
        events: Vec<Event>,
    ) -> Result<EventsAnswer, LedgerUnavailable> {
        self.ask(|reply| LedgerInput::Settle {
            reservation,
            events,
            reply,
        })
        .await?
    }

    /// Sends an input that needs no answer.
    pub async fn tell(&self, input: LedgerInput) -> Result<(), LedgerUnavailable> {
        self.sender
            .send(input)
            .await
            .map_err(|_| LedgerUnavailable::Stopped)
    }
}
