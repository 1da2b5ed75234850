//! Budgets checked: the `[budgets]` shorthand and each `[[budget]]` table.

use toml::Spanned;

use super::*;

pub(super) fn amount(
    raw: &Spanned<RawAmount>,
    field: &str,
    bytes: bool,
    locator: &mut Locator<'_>,
) -> Option<f64> {
    let value = match raw.get_ref() {
        RawAmount::Number(n) => *n,
        RawAmount::Text(text) if bytes => match text.parse::<bytesize::ByteSize>() {
            Ok(size) => size.as_u64() as f64,
            Err(_) => {
                locator.report(
                    raw.span(),
                    format!("{field}: '{text}' is not a size such as \"512MiB\" or \"2GiB\""),
                );
                return None;
            }
        },
        RawAmount::Text(text) => {
            locator.report(raw.span(), format!("{field}: '{text}' must be a number"));
            return None;
        }
    };
    if value.is_finite() && value > 0.0 {
        Some(value)
    } else {
        locator.report(
            raw.span(),
            format!("{field}: the limit must be a number above 0, got {value}"),
        );
        None
    }
}

pub(super) fn validate_budgets(
    shorthand: RawShorthand,
    list: Vec<Spanned<RawBudget>>,
    targets: &[String],
    has_redis: bool,
    locator: &mut Locator<'_>,
) -> Vec<BudgetSpec> {
    let mut budgets: Vec<BudgetSpec> = Vec::new();
    let shorthand_fields = [
        (Resource::CpuSeconds, shorthand.cpu_seconds),
        (Resource::MemBytes, shorthand.mem_bytes),
        (Resource::DiskBytes, shorthand.disk_bytes),
        (Resource::Tokens, shorthand.tokens),
        (Resource::Usd, shorthand.usd),
    ];
    for (resource, raw) in shorthand_fields {
        let Some(raw) = raw else { continue };
        let bytes = matches!(resource, Resource::MemBytes | Resource::DiskBytes);
        let field = format!("budgets.{}", resource.label());
        if let Some(limit) = amount(&raw, &field, bytes, locator) {
            budgets.push(BudgetSpec {
                name: format!("lifetime-{}", resource.label()),
                resource,
                limit,
                window: Window::Lifetime,
                scope: Scope::All,
                warn_at: DEFAULT_WARN_AT,
                on_exceed: OnExceed::SoftKill,
                fleet: false,
            });
        }
    }
    for raw in list {
        if let Some(budget) = validate_budget(raw, targets, &budgets, has_redis, locator) {
            budgets.push(budget);
        }
    }
    budgets
}

pub(super) fn validate_budget(
    raw: Spanned<RawBudget>,
    targets: &[String],
    earlier: &[BudgetSpec],
    has_redis: bool,
    locator: &mut Locator<'_>,
) -> Option<BudgetSpec> {
    let span = raw.span();
    let raw = raw.into_inner();
    let before = locator.problems.len();
    let name = match &raw.name {
        Some(name)
            if !name.get_ref().is_empty() && !name.get_ref().chars().any(char::is_control) =>
        {
            if earlier.iter().any(|b| &b.name == name.get_ref()) {
                locator.report(
                    name.span(),
                    format!(
                        "budget.name: '{}' is used twice; names must be unique",
                        name.get_ref()
                    ),
                );
            }
            name.get_ref().clone()
        }
        Some(name) => {
            locator.report(
                name.span(),
                "budget.name: must be non-empty and free of control characters",
            );
            String::new()
        }
        None => {
            locator.report(span.clone(), "budget: 'name' is required");
            String::new()
        }
    };
    let resource = match &raw.resource {
        None => {
            locator.report(
                span.clone(),
                format!("budget '{name}': 'resource' is required (usd, tokens, cpu_seconds, mem_bytes or disk_bytes)"),
            );
            None
        }
        Some(r) => {
            let parsed = Resource::parse(r.get_ref());
            if parsed.is_none() {
                locator.report(
                    r.span(),
                    format!(
                        "budget.resource: '{}' is not one of usd, tokens, cpu_seconds, mem_bytes, disk_bytes",
                        r.get_ref()
                    ),
                );
            }
            parsed
        }
    };
    let bytes = matches!(resource, Some(Resource::MemBytes | Resource::DiskBytes));
    let limit = match &raw.limit {
        None => {
            locator.report(
                span.clone(),
                format!("budget '{name}': 'limit' is required"),
            );
            None
        }
        Some(limit) => amount(limit, "budget.limit", bytes, locator),
    };
    let window = match &raw.window {
        None => Some(Window::Lifetime),
        Some(w) => match Window::parse(w.get_ref()) {
            Ok(window) => Some(window),
            Err(message) => {
                locator.report(w.span(), format!("budget.window: {message}"));
                None
            }
        },
    };
    let warn_at = match &raw.warn_at {
        None => DEFAULT_WARN_AT,
        Some(w) => {
            let value = *w.get_ref();
            if !(value > 0.0 && value < 1.0) {
                locator.report(
                    w.span(),
                    format!(
                        "budget.warn_at: {value} must be above 0 and below 1 (a share of the limit)"
                    ),
                );
            }
            value
        }
    };
    let on_exceed = match &raw.on_exceed {
        None => OnExceed::SoftKill,
        Some(o) => match o.get_ref().as_str() {
            "soft_kill" => OnExceed::SoftKill,
            "alert" => OnExceed::Alert,
            other => {
                locator.report(
                    o.span(),
                    format!("budget.on_exceed: '{other}' is not soft_kill or alert"),
                );
                OnExceed::Alert
            }
        },
    };
    let scope = match (&raw.agent, &raw.target) {
        (Some(a), Some(_)) => {
            locator.report(
                a.span(),
                format!("budget '{name}': give agent or target, not both"),
            );
            Scope::All
        }
        (Some(a), None) => {
            if let Some(r) = resource.filter(|r| !r.is_usage()) {
                locator.report(
                    a.span(),
                    format!(
                        "budget.agent: a {} budget is scoped by target, not agent (agents report usd and tokens)",
                        r.label()
                    ),
                );
            }
            Scope::Agent(a.get_ref().clone())
        }
        (None, Some(t)) => {
            if let Some(r) = resource.filter(|r| r.is_usage()) {
                locator.report(
                    t.span(),
                    format!(
                        "budget.target: a {} budget is scoped by agent, not target (targets are processes)",
                        r.label()
                    ),
                );
            } else if !targets.contains(t.get_ref()) {
                locator.report(
                    t.span(),
                    format!(
                        "budget.target: '{}' is not a configured target ({})",
                        t.get_ref(),
                        targets.join(", ")
                    ),
                );
            }
            Scope::Target(t.get_ref().clone())
        }
        (None, None) => Scope::All,
    };
    let fleet = raw.fleet.as_ref().is_some_and(|f| *f.get_ref());
    if let Some(flag) = raw.fleet.as_ref().filter(|f| *f.get_ref()) {
        if !has_redis {
            locator.report(
                flag.span(),
                format!("budget '{name}': fleet = true needs [fleet] redis_url, the Redis every sidecar of the fleet shares"),
            );
        }
        if let Some(r) = resource.filter(|r| !r.is_usage()) {
            locator.report(
                flag.span(),
                format!(
                    "budget '{name}': fleet = true is for usd and tokens budgets; a {} budget counts this sidecar's own processes",
                    r.label()
                ),
            );
        }
        if let Some(Window::Rolling(_)) = window {
            locator.report(
                flag.span(),
                format!("budget '{name}': a fleet budget's window is lifetime, day, week or month (UTC calendar); rolling windows are per sidecar"),
            );
        }
    }
    if locator.problems.len() > before {
        return None;
    }
    Some(BudgetSpec {
        fleet,
        name,
        resource: resource?,
        limit: limit?,
        window: window?,
        scope,
        warn_at,
        on_exceed,
    })
}
