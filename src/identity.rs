//! What the sampler saw of each target, shared with the enforcer: the roots as discovered
//! (pid and start time) and every member of the last sampled tree. The sampler writes it, the
//! enforcer reads it; neither depends on the other for it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;

/// A process as discovered: its pid and its start time since boot (ticks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Identity {
    pub pid: i32,
    pub start: u64,
}

/// What the sampler last saw of each target, published for the enforcer.
pub type IdentityBook = Arc<RwLock<Book>>;

/// Each target's roots as discovered, and every process of its tree at the last sample.
#[derive(Debug, Default)]
pub struct Book {
    roots: HashMap<String, Vec<Identity>>,
    /// A root that exits on the polite signal orphans its children, which then leave the
    /// tree a fresh scan finds; the last sample still knows them.
    members: HashMap<String, Vec<Identity>>,
}

impl Book {
    pub fn get(&self, target: &str) -> Option<&Vec<Identity>> {
        self.roots.get(target)
    }

    pub fn insert(&mut self, target: String, roots: Vec<Identity>) {
        self.roots.insert(target, roots);
    }

    pub fn set_members(&mut self, target: &str, members: Vec<Identity>) {
        match self.members.get_mut(target) {
            Some(slot) => *slot = members,
            None => {
                self.members.insert(target.to_string(), members);
            }
        }
    }

    pub fn members(&self, target: &str) -> &[Identity] {
        self.members.get(target).map_or(&[], Vec::as_slice)
    }
}
