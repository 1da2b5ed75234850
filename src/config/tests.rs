//! The config parser and checks, driven with TOML text.

use super::*;

fn problems(text: &str) -> Vec<String> {
    match Config::from_toml("c.toml", text) {
        Ok(_) => Vec::new(),
        Err(error) => error.problems().iter().map(Problem::to_string).collect(),
    }
}

#[test]
fn empty_file_gives_defaults_and_meters_itself() {
    let config = Config::from_toml("c.toml", "").expect("empty config is valid");
    assert_eq!(config.server.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(config.metrics.namespace, "haios");
    assert_eq!(config.targets.len(), 1);
    assert!(matches!(config.targets[0].selector, Selector::OwnProcess));
}

#[test]
fn unknown_key_names_line_and_column() {
    let found = problems("[server]\nlisten = \"127.0.0.1:1\"\nlistn = 3\n");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("c.toml:3:1: unknown field `listn`"),
        "{found:?}"
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = r#"
[server]
listen = "nowhere"

[[target]]
name = "a"
sample_interval = "soon"
pid = 12

[[target]]
name = "b"
"#;
    let found = problems(text);
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(
        found[0].starts_with("c.toml:3:10: server.listen: 'nowhere'"),
        "{found:?}"
    );
    assert!(
        found[1].starts_with("c.toml:7:19: target.sample_interval: 'soon'"),
        "{found:?}"
    );
    assert!(
        found[2].contains("target 'b': give exactly one selector"),
        "{found:?}"
    );
}

#[test]
fn two_selectors_are_refused() {
    let found = problems("[[target]]\nname = \"x\"\npid = 5\ncgroup = \"/a\"\n");
    assert_eq!(found.len(), 1);
    assert!(
        found[0].contains("has 2 selectors (pid, cgroup)"),
        "{found:?}"
    );
}

#[test]
fn match_selector_compiles_its_regex() {
    let config = Config::from_toml(
        "c.toml",
        "[[target]]\nname = \"x\"\nmatch = { exe = \"python3\", cmdline = \"agent\\\\.py\" }\n",
    )
    .expect("valid");
    match &config.targets[0].selector {
        Selector::Match { exe, cmdline } => {
            assert_eq!(exe.as_deref(), Some("python3"));
            assert!(
                cmdline
                    .as_ref()
                    .is_some_and(|re| re.is_match("python3 agent.py"))
            );
        }
        other => panic!("unexpected selector {other:?}"),
    }
    let bad = problems("[[target]]\nname = \"x\"\nmatch = { cmdline = \"(\" }\n");
    assert!(
        bad[0].contains("target.match.cmdline: not a valid regex"),
        "{bad:?}"
    );
}

#[test]
fn line_column_counts_characters() {
    assert_eq!(line_column("ab\ncé d", 7), (2, 4));
    assert_eq!(line_column("x", 0), (1, 1));
}

#[test]
fn proxy_upstreams_replace_built_ins_and_bad_ones_are_located() {
    let config = Config::from_toml(
        "c.toml",
        "[proxy]\nenabled = true\n[[proxy.upstream]]\nname = \"openai\"\nprovider = \"openai\"\nbase_url = \"http://127.0.0.1:8001/\"\nagent = \"coder\"\n",
    )
    .expect("valid");
    assert!(config.proxy.enabled);
    let openai = config.proxy.upstream("openai").expect("openai");
    assert_eq!(openai.base_url, "http://127.0.0.1:8001");
    assert_eq!(openai.agent.as_deref(), Some("coder"));
    assert_eq!(
        config
            .proxy
            .upstream("anthropic")
            .map(|u| u.base_url.as_str()),
        Some("https://api.anthropic.com")
    );
    let found = problems(
        "[proxy]\nresponse_timeout = \"0s\"\n[[proxy.upstream]]\nname = \"a/b\"\nprovider = \"cohere\"\nbase_url = \"ftp://x\"\n[[proxy.upstream]]\nname = \"u\"\nprovider = \"openai\"\nbase_url = \"https://user:pw@host/v1?x=1\"\n",
    );
    assert_eq!(found.len(), 5, "{found:?}");
    for needle in [
        "c.toml:2:20: proxy.response_timeout: '0s' is shorter than the minimum of 1s",
        "c.toml:4:8: proxy.upstream.name: 'a/b'",
        "c.toml:5:12: proxy.upstream.provider: must be one of anthropic, openai, gemini, got 'cohere'",
        "c.toml:6:12: proxy.upstream.base_url: 'ftp://x' must start with http:// or https://",
        "c.toml:10:12: proxy.upstream.base_url: 'https://user:pw@host/v1?x=1' must not carry user info",
    ] {
        assert!(
            found.iter().any(|p| p.starts_with(needle)),
            "{needle} not in {found:?}"
        );
    }
}

#[test]
fn a_fleet_instance_is_checked_and_named_by_default_from_the_listen_address() {
    let config =
        Config::from_toml("c.toml", "[fleet]\ninstance = \"host-a:8000\"\n").expect("valid");
    assert_eq!(
        config.fleet.instance_names(config.server.listen),
        vec!["host-a:8000".to_string()]
    );
    let defaults = Config::from_toml("c.toml", "").expect("valid");
    let names = defaults.fleet.instance_names(defaults.server.listen);
    assert!(names.contains(&"localhost:8000".to_string()), "{names:?}");
    assert!(names.contains(&"127.0.0.1:8000".to_string()), "{names:?}");
    let found = problems("[fleet]\ninstance = \"a b\"\n");
    assert!(
        found
            .iter()
            .any(|p| p.contains("c.toml:2:12: fleet.instance")),
        "{found:?}"
    );
}
