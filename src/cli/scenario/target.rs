//! The run's one target. `--url` on the command line overrides the file's `url`: its host and
//! port always, its path when it has one. A scenario's own `url` may change the path only
//! (`url = "/feed"`, or the file's target with another path).

use super::blocks::Block;
use super::keys::Item;
use super::reader::Reader;
use super::CommandLine;
use crate::plan::{parse_url, PlanError, Url};

/// The run's target, and where it came from.
pub(super) struct Target {
    /// The file's top-level `url`, if it has one.
    file: Option<Url>,
    /// The run's url: the command line's target, else the file's; the command line's path
    /// if it gives one, else the file's.
    run: Url,
    /// The command line gave a path, which every scenario keeps.
    cli_path: bool,
}

impl Target {
    /// The target from the top level's `url` and the command line's `--url`; with neither,
    /// an error at the top of the file.
    pub(super) fn resolve(
        r: &Reader<'_>,
        top: &Block,
        cmd: &CommandLine,
    ) -> Result<Self, PlanError> {
        let file = match (top.url(), top.url_item()) {
            (Some(u), Some(i)) => Some(parse_url(&u).map_err(|e| r.err(&i.span, e.to_string()))?),
            _ => None,
        };
        let cli_url = match &cmd.flags.run.target_url {
            Some(u) if cmd.sets("target_url") => Some(parse_url(u)?),
            _ => None,
        };
        let (run, cli_path) =
            match (cli_url, &file) {
                (Some(c), f) => {
                    let explicit = c.path != "/";
                    let path = match f {
                        Some(f) if !explicit => f.path.clone(),
                        _ => c.path.clone(),
                    };
                    (Url { path, ..c }, explicit)
                }
                (None, Some(f)) => (f.clone(), false),
                (None, None) => return Err(PlanError::Scenario {
                    at: r.at(0),
                    reason:
                        "no target: add url = \"ws://host:port/path\" at the top (or pass --url)"
                            .into(),
                }),
            };
        Ok(Self {
            file,
            run,
            cli_path,
        })
    }

    /// The run's url as a `run` word.
    pub(super) fn url(&self) -> String {
        self.with_path(&self.run.path)
    }

    /// The url of scenario `b` whose own `url` item is `own`: the run's target with the
    /// scenario's path, or `None` when the command line's path stands. A different target is
    /// an error at the item.
    pub(super) fn scenario_url(
        &self,
        r: &Reader<'_>,
        b: &Block,
        own: &Item,
    ) -> Result<Option<String>, PlanError> {
        let text = own.args[0].trim_start_matches("--url=");
        let path = if text.starts_with('/') {
            if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(r.err(&own.span, "whitespace in the path (percent-encode it)"));
            }
            text.to_owned()
        } else {
            let own_u = parse_url(text).map_err(|e| r.err(&own.span, e.to_string()))?;
            let base = self.file.as_ref().unwrap_or(&self.run);
            if (base.tls, &base.host, base.port) != (own_u.tls, &own_u.host, own_u.port) {
                return Err(r.err(
                    &own.span,
                    format!(
                        "scenario `{}`: one run has one target ({}://{}); a scenario may change the path only (url = \"/path\")",
                        b.name,
                        scheme(base),
                        base.host_header()
                    ),
                ));
            }
            own_u.path
        };
        Ok((!self.cli_path).then(|| self.with_path(&path)))
    }

    /// The run's target with `path`.
    fn with_path(&self, path: &str) -> String {
        format!("{}://{}{}", scheme(&self.run), self.run.host_header(), path)
    }
}

/// The url scheme of `u`.
fn scheme(u: &Url) -> &'static str {
    if u.tls {
        "wss"
    } else {
        "ws"
    }
}
