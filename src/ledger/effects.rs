//! What the ledger does besides its batches: refusals counted, the weekly report, compaction,
//! the pricing status.

use super::*;

impl Ledger {
    /// Writes the weekly report when `[report] every` has passed (and once at start).
    pub(super) fn report_if_due(&mut self, now: i64) {
        let Some(config) = self.report.clone() else {
            return;
        };
        if self
            .last_report
            .is_some_and(|at| at.elapsed() < config.every)
        {
            return;
        }
        self.last_report = Some(Instant::now());
        let week_ms = 7 * 86_400_000;
        let written = self
            .store
            .report(now - week_ms, now, self.budgets.status(now))
            .map_err(|e| e.to_string())
            .and_then(|report| {
                std::fs::create_dir_all(&config.dir).map_err(|e| e.to_string())?;
                let path = config.dir.join(crate::report::file_name(now));
                crate::files::write_atomic(&path, report.markdown().as_bytes())
                    .map_err(|e| e.to_string())?;
                Ok(path)
            });
        self.health
            .set_report(Some(written.as_ref().map(|_| now).map_err(Clone::clone)));
        match written {
            Ok(path) => {
                info!(path = %path.display(), "cost report written");
                self.metrics
                    .cost_report_last_success_timestamp_seconds
                    .get_or_create(&Vec::new())
                    .set(now as f64 / 1000.0);
            }
            Err(error) => {
                warn!(%error, dir = %config.dir.display(), "cost report not written; will retry at the next interval")
            }
        }
    }

    pub(super) fn refused(
        &mut self,
        refusal: crate::health::Refusal,
        signal: Option<crate::otlp::Signal>,
        now: i64,
    ) -> Vec<crate::otlp::StateRow> {
        self.metrics
            .requests_refused_total
            .get_or_create(&crate::metrics::RefusedLabels {
                route: refusal.route,
                reason: refusal.reason,
            })
            .inc();
        warn!(route = refusal.route.label(), bytes = ?refusal.bytes, limit = refusal.limit, setting = refusal.setting, "request body over the limit refused: its sender drops it, and the usage in it is lost; raise {}", refusal.setting);
        self.health.record_refusal(refusal, now);
        signal.map(|s| self.otlp.release(s)).unwrap_or_default()
    }

    pub(super) fn pricing_status(&self) -> PricingStatus {
        let mut unknown: Vec<&UnknownModel> = self.unknown_models.values().collect();
        unknown.sort_by(|a, b| b.events.cmp(&a.events).then_with(|| a.model.cmp(&b.model)));
        let unknown_models_omitted = unknown.len().saturating_sub(LISTED_UNKNOWN);
        let unknown: Vec<UnknownModel> =
            unknown.into_iter().take(LISTED_UNKNOWN).cloned().collect();
        PricingStatus {
            baseline_version: self.prices.baseline_version.clone(),
            baseline_taken: self.prices.baseline_taken.clone(),
            manifest: self
                .prices
                .manifest
                .as_ref()
                .map(|p| p.display().to_string()),
            models: self
                .prices
                .models_by_source
                .iter()
                .map(|(source, n)| (source.label().to_string(), *n))
                .collect(),
            rejected_rows: self.prices.rejected.clone(),
            unknown_models: unknown,
            unknown_models_omitted,
        }
    }

    pub(super) fn compact_if_due(&mut self, now: i64) {
        if self
            .last_compaction
            .is_some_and(|at| at.elapsed() < COMPACTION_EVERY)
        {
            return;
        }
        self.last_compaction = Some(Instant::now());
        let cutoff = now - i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX);
        self.otlp.prune(cutoff);
        match self.store.compact(cutoff) {
            Ok(0) => {}
            Ok(rows) => info!(rows, "old rows folded into daily rollups"),
            Err(failure) => warn!(error = %failure, "compaction failed; will retry in an hour"),
        }
    }
}
