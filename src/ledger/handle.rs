//! The typed way to talk to the ledger: one async method per question, one error type for
//! "no answer", mapped to an HTTP status in one place (`api::unavailable`). Fire-and-forget
//! inputs (refusals, kill orders) go through [`LedgerHandle::tell`].

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

#[derive(Clone)]
pub struct LedgerHandle(LedgerSender);

impl LedgerHandle {
    pub fn new(sender: LedgerSender) -> LedgerHandle {
        LedgerHandle(sender)
    }

    async fn ask<T>(
        &self,
        input: impl FnOnce(oneshot::Sender<T>) -> LedgerInput,
    ) -> Result<T, LedgerUnavailable> {
        let (reply, answer) = oneshot::channel();
        self.0
            .send(input(reply))
            .await
            .map_err(|_| LedgerUnavailable::Stopped)?;
        answer.await.map_err(|_| LedgerUnavailable::Stopped)
    }

    /// Stores validated events (and counts the rejected types); what became of each.
    pub async fn events(
        &self,
        source: &'static str,
        events: Vec<Event>,
        rejected: Vec<&'static str>,
    ) -> Result<EventsAnswer, LedgerUnavailable> {
        self.ask(|reply| LedgerInput::Events {
            source,
            events,
            rejected,
            reply,
        })
        .await?
    }

    /// One mapped OTLP request.
    pub async fn otlp(&self, mapped: crate::otlp::Mapped) -> Result<OtlpAnswer, LedgerUnavailable> {
        self.ask(|reply| LedgerInput::Otlp { mapped, reply })
            .await?
    }

    /// Every budget's state now (in memory, answered at once).
    pub async fn budgets(&self) -> Result<Vec<BudgetStatus>, LedgerUnavailable> {
        self.ask(LedgerInput::Budgets).await
    }

    pub async fn pricing_status(&self) -> Result<PricingStatus, LedgerUnavailable> {
        self.ask(LedgerInput::PricingStatus).await
    }

    /// Sends an input that needs no answer.
    pub async fn tell(&self, input: LedgerInput) -> Result<(), LedgerUnavailable> {
        self.0
            .send(input)
            .await
            .map_err(|_| LedgerUnavailable::Stopped)
    }
}
