//! Reservations: a call's worst case held against every hard budget that covers its agent
//! before the call is made, so concurrent calls cannot together spend past a limit. Pure: the
//! ledger owns the one instance and passes the clock.
//!
//! A call asks for its input estimate plus its output limit. It is admitted when that fits in
//! every hard (`on_exceed = "soft_kill"`) usd and tokens budget that covers the agent, counting
//! what is used and what other calls hold. A stream that does not fit whole may be admitted on
//! the output that does fit (at least [`MIN_STREAM_OUTPUT`] tokens): the proxy cuts it there.
//! A reservation ends when its call's usage is charged (settled) or the call dies (released),
//! and expires after [`RESERVATION_TTL_MS`] in case neither ever comes.

use std::collections::HashMap;

use super::{Budgets, Resource, Scope};

/// A stream is admitted only if at least this much output fits.
pub const MIN_STREAM_OUTPUT: u64 = 256;
/// A reservation nothing settled or released is dropped after this long.
pub const RESERVATION_TTL_MS: i64 = 3_600_000;

/// What a call may spend at most.
#[derive(Debug, Clone, PartialEq)]
pub struct Ask {
    pub agent: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// USD per token of input (the dearer of input and cache write) and of output; zero for a
    /// model without a price.
    pub input_usd: f64,
    pub output_usd: f64,
    /// A stream may be admitted on less output than it asked for.
    pub stream: bool,
}

impl Ask {
    fn amount(&self, resource: Resource, output: u64) -> f64 {
        match resource {
            Resource::Tokens => (self.input_tokens + output) as f64,
            _ => self.input_tokens as f64 * self.input_usd + output as f64 * self.output_usd,
        }
    }
}

/// An admitted call.
#[derive(Debug, Clone, PartialEq)]
pub struct Admitted {
    pub id: u64,
    /// The output tokens the call may produce: all it asked for, or (a stream) what fits.
    pub output_tokens: u64,
    /// The budget that cut the output below what was asked.
    pub limited_by: Option<usize>,
    /// What is held against each covering budget: (budget index, amount).
    pub held: Vec<(usize, f64)>,
}

/// Why a call was refused: the first budget it does not fit.
#[derive(Debug, Clone, PartialEq)]
pub struct NoRoom {
    pub budget: usize,
    /// What the call would have needed, and what was free.
    pub needed: f64,
    pub free: f64,
}

#[derive(Debug, Clone)]
struct Held {
    /// (budget index, amount).
    amounts: Vec<(usize, f64)>,
    expires_ms: i64,
}

/// Every open reservation.
#[derive(Debug, Default, Clone)]
pub struct Reservations {
    next: u64,
    open: HashMap<u64, Held>,
}

/// Whether a budget holds `agent`'s calls ([`super::holds_calls`]).
fn covers(spec: &super::BudgetSpec, agent: &str) -> bool {
    let (scoped_agent, target_scoped) = match &spec.scope {
        Scope::All => (None, false),
        Scope::Agent(a) => (Some(a.as_str()), false),
        Scope::Target(_) => (None, true),
    };
    super::holds_calls(
        spec.on_exceed,
        spec.resource,
        scoped_agent,
        target_scoped,
        agent,
    )
}

impl Reservations {
    /// What open reservations hold against budget `index`.
    pub fn held(&self, index: usize) -> f64 {
        self.open
            .values()
            .flat_map(|h| &h.amounts)
            .filter(|(i, _)| *i == index)
            .fold(0.0, |sum, (_, amount)| sum + amount)
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Admits `ask` and holds its worst case, or says which budget has no room.
    pub fn reserve(
        &mut self,
        budgets: &Budgets,
        ask: &Ask,
        now_ms: i64,
    ) -> Result<Admitted, NoRoom> {
        self.expire(now_ms);
        let mut output = ask.output_tokens;
        let mut limited_by = None;
        let covering: Vec<usize> = budgets
            .specs()
            .iter()
            .enumerate()
            .filter(|(_, spec)| covers(spec, &ask.agent))
            .map(|(i, _)| i)
            .collect();
        for &index in &covering {
            let spec = &budgets.specs()[index];
            let free = budgets.room(index) - self.held(index);
            let whole = ask.amount(spec.resource, ask.output_tokens);
            if whole <= free {
                continue;
            }
            // What output fits beside the input.
            let per_output = match spec.resource {
                Resource::Tokens => 1.0,
                _ => ask.output_usd,
            };
            let beside = free - ask.amount(spec.resource, 0);
            let fits = if per_output > 0.0 {
                (beside / per_output).floor().max(0.0) as u64
            } else if beside >= 0.0 {
                ask.output_tokens
            } else {
                0
            };
            let least = MIN_STREAM_OUTPUT.min(ask.output_tokens);
            if !ask.stream || fits < least {
                return Err(NoRoom {
                    budget: index,
                    needed: whole,
                    free: free.max(0.0),
                });
            }
            if fits < output {
                output = fits;
                limited_by = Some(index);
            }
        }
        let amounts: Vec<(usize, f64)> = covering
            .iter()
            .map(|&i| (i, ask.amount(budgets.specs()[i].resource, output)))
            .collect();
        self.next += 1;
        let id = self.next;
        if !amounts.is_empty() {
            self.open.insert(
                id,
                Held {
                    amounts: amounts.clone(),
                    expires_ms: now_ms + RESERVATION_TTL_MS,
                },
            );
        }
        Ok(Admitted {
            id,
            output_tokens: output,
            limited_by,
            held: amounts,
        })
    }

    /// Ends a reservation (its usage was charged, or the call died). Unknown ids are ignored.
    pub fn release(&mut self, id: u64) {
        self.open.remove(&id);
    }

    fn expire(&mut self, now_ms: i64) {
        self.open.retain(|_, held| held.expires_ms > now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::{BudgetSpec, Charge, OnExceed, Window};

    fn budgets(limit: f64, resource: Resource, on_exceed: OnExceed) -> Budgets {
        Budgets::new(
            vec![BudgetSpec {
                name: "b".into(),
                resource,
                limit,
                window: Window::Lifetime,
                scope: Scope::Agent("coder".into()),
                warn_at: 0.9,
                on_exceed,
                fleet: false,
            }],
            0,
        )
    }

    fn ask(input: u64, output: u64, stream: bool) -> Ask {
        Ask {
            agent: "coder".into(),
            input_tokens: input,
            output_tokens: output,
            input_usd: 3e-6,
            output_usd: 15e-6,
            stream,
        }
    }

    #[test]
    fn concurrent_calls_never_hold_more_than_the_limit() {
        let budgets = budgets(1000.0, Resource::Tokens, OnExceed::SoftKill);
        let mut open = Reservations::default();
        let admitted: Vec<_> = (0..10)
            .filter_map(|_| open.reserve(&budgets, &ask(100, 200, false), 0).ok())
            .collect();
        assert_eq!(admitted.len(), 3, "three calls of 300 fit in 1000");
        assert_eq!(open.held(0), 900.0);
        let refused = open
            .reserve(&budgets, &ask(100, 200, false), 0)
            .expect_err("no room");
        assert_eq!((refused.needed, refused.free), (300.0, 100.0));
        open.release(admitted[0].id);
        assert!(open.reserve(&budgets, &ask(100, 200, false), 0).is_ok());
    }

    #[test]
    fn usage_already_charged_counts_and_a_stream_gets_what_fits() {
        let mut budgets = budgets(0.01, Resource::Usd, OnExceed::SoftKill);
        budgets.charge(
            &Charge {
                resource: Resource::Usd,
                amount: 0.006,
                ts_ms: 0,
                agent: Some("coder"),
                target: None,
            },
            0,
        );
        let mut open = Reservations::default();
        // $0.004 free: 100 input tokens ($0.0003) leave room for 246 output tokens.
        assert!(open.reserve(&budgets, &ask(100, 4096, false), 0).is_err());
        let stream = open
            .reserve(&budgets, &ask(100, 4096, true), 0)
            .expect_err("246 < the least a stream needs");
        assert_eq!(stream.budget, 0);
        let small = open
            .reserve(&budgets, &ask(10, 4096, true), 0)
            .expect("a stream with less input");
        assert_eq!(small.output_tokens, 264, "($0.004 - 10 × $3e-6) / $15e-6");
    }

    #[test]
    fn soft_budgets_and_other_agents_are_not_held_and_reservations_expire() {
        let soft = budgets(10.0, Resource::Tokens, OnExceed::Alert);
        let mut open = Reservations::default();
        assert!(open.reserve(&soft, &ask(100, 200, false), 0).is_ok());
        assert!(open.is_empty(), "nothing held for an alert-only budget");
        let hard = budgets(1000.0, Resource::Tokens, OnExceed::SoftKill);
        let mut other = ask(900, 900, false);
        other.agent = "reviewer".into();
        assert!(open.reserve(&hard, &other, 0).is_ok());
        assert!(open.is_empty());
        open.reserve(&hard, &ask(100, 800, false), 0).expect("fits");
        assert!(open.reserve(&hard, &ask(100, 800, false), 1).is_err());
        assert!(
            open.reserve(&hard, &ask(100, 800, false), RESERVATION_TTL_MS + 1)
                .is_ok(),
            "the first one expired"
        );
    }
}
