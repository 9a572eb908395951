//! The CLI's commands, one module per az command group.

pub mod connection;
pub mod demo;
pub mod doctor;
pub mod evidence;
pub mod gateway;
pub mod local_gateway;
pub mod logs;
pub mod monitor;
pub mod pki;
pub mod serve;
pub mod state;

use serde_json::Value;

/// vgw's BGP tuning flags, shared by `vnet-gateway` (defaults for every peer) and `local-gateway` (one
/// peer).
#[derive(clap::Args, Debug, Default)]
pub struct BgpTuning {
    /// BGP hold time in seconds (vgw; default 180, 0 or 3-65535).
    #[arg(long)]
    pub bgp_hold_time: Option<u16>,
    /// BGP keepalive interval in seconds (vgw; default 60, at most a third of the hold time).
    #[arg(long)]
    pub bgp_keepalive: Option<u16>,
    /// Prefixes a BGP peer may advertise before --bgp-max-prefix-action applies (vgw; default 100000).
    #[arg(long)]
    pub bgp_max_prefixes: Option<u32>,
    /// Warn (default) or Teardown when a peer exceeds --bgp-max-prefixes (vgw).
    #[arg(long, value_parser = ["Warn", "Teardown"])]
    pub bgp_max_prefix_action: Option<String>,
}

impl BgpTuning {
    /// Whether any flag was given.
    pub fn is_set(&self) -> bool {
        self.bgp_hold_time.is_some()
            || self.bgp_keepalive.is_some()
            || self.bgp_max_prefixes.is_some()
            || self.bgp_max_prefix_action.is_some()
    }

    /// Writes the given flags into a `bgpSettings` object.
    pub fn apply(&self, bgp: &mut Value) {
        set(bgp, "holdTimeSeconds", self.bgp_hold_time);
        set(bgp, "keepaliveSeconds", self.bgp_keepalive);
        set(bgp, "maxPrefixes", self.bgp_max_prefixes);
        set(bgp, "maxPrefixAction", self.bgp_max_prefix_action.clone());
    }
}

/// Parses az-style booleans for flags that take an optional value: `--enable-bgp`, `--enable-bgp false`.
pub fn bool_flag() -> clap::builder::BoolishValueParser {
    clap::builder::BoolishValueParser::new()
}

/// Sets `obj[key] = value` when the flag was given.
pub fn set<T: serde::Serialize>(obj: &mut Value, key: &str, value: Option<T>) {
    if let (Some(v), Some(map)) = (value, obj.as_object_mut()) {
        map.insert(
            key.to_string(),
            serde_json::to_value(v).unwrap_or(Value::Null),
        );
    }
}

/// Percent-encodes a path segment (names are validated server-side; this keeps odd input from
/// changing the path).
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// az's generic update flags, on every `update`: they edit the resource's JSON (as `show` prints it)
/// before the other flags apply and the result is sent back.
#[derive(clap::Args, Debug, Default)]
pub struct GenericUpdate {
    /// Set a field: `--set PATH=VALUE`, e.g. `--set dpdTimeoutSeconds=30` or
    /// `--set bgpSettings.peerWeight=10`; VALUE is read as JSON when it parses as JSON.
    #[arg(long, num_args = 1.., value_name = "PATH=VALUE")]
    pub set: Vec<String>,
    /// Append to a list: `--add PATH VALUE` (JSON) or `--add PATH KEY=VALUE ...` (one object).
    #[arg(long, num_args = 2.., value_name = "PATH VALUE")]
    pub add: Vec<String>,
    /// Remove a field or a list entry: `--remove PATH` or `--remove LIST INDEX`, e.g.
    /// `--remove egressNatRules 0`.
    #[arg(long, num_args = 1..=2, value_name = "PATH [INDEX]")]
    pub remove: Vec<String>,
    /// Keep --set/--add values as strings instead of reading them as JSON.
    #[arg(long)]
    pub force_string: bool,
}

/// One step of a generic-update path.
#[derive(Debug, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
    /// `[key=value]`: the list entry whose `key` is `value`.
    Match(String, String),
}

fn parse_path(path: &str) -> anyhow::Result<Vec<Step>> {
    let mut steps = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            steps.push(Step::Key(key.to_string()));
        }
        while let Some(r) = rest.strip_prefix('[') {
            let end = r
                .find(']')
                .ok_or_else(|| anyhow::anyhow!("path '{path}': '[' without ']'"))?;
            let inner = &r[..end];
            steps.push(match inner.split_once('=') {
                Some((k, v)) => Step::Match(k.to_string(), v.to_string()),
                None => Step::Index(inner.parse().map_err(|_| {
                    anyhow::anyhow!("path '{path}': '[{inner}]' is not an index or [key=value]")
                })?),
            });
            rest = &r[end + 1..];
        }
        if key.is_empty() && steps.is_empty() {
            anyhow::bail!("path '{path}' is empty");
        }
    }
    Ok(steps)
}

/// `bgp_settings` -> `bgpSettings`, so az's snake_case paths work too.
fn camel(key: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in key.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn step_into<'a>(
    v: &'a mut Value,
    step: &Step,
    path: &str,
    create: bool,
) -> anyhow::Result<&'a mut Value> {
    match step {
        Step::Key(k) => {
            let Some(map) = v.as_object_mut() else {
                anyhow::bail!("path '{path}': '{k}' is inside something that is not an object");
            };
            let key = if map.contains_key(k) || !map.contains_key(&camel(k)) {
                k.clone()
            } else {
                camel(k)
            };
            if !map.contains_key(&key) {
                if !create {
                    anyhow::bail!(
                        "path '{path}': there is no field '{k}' (see 'show' for the fields)"
                    );
                }
                map.insert(key.clone(), Value::Object(Default::default()));
            }
            Ok(map.get_mut(&key).expect("inserted above"))
        }
        Step::Index(i) => {
            let Some(list) = v.as_array_mut() else {
                anyhow::bail!("path '{path}': [{i}] indexes something that is not a list");
            };
            let len = list.len();
            list.get_mut(*i).ok_or_else(|| {
                anyhow::anyhow!("path '{path}': index {i} is out of range (the list has {len})")
            })
        }
        Step::Match(k, want) => {
            let Some(list) = v.as_array_mut() else {
                anyhow::bail!(
                    "path '{path}': [{k}={want}] selects from something that is not a list"
                );
            };
            list.iter_mut()
                .find(|e| {
                    e[k.as_str()].as_str() == Some(want.as_str())
                        || *want == e[k.as_str()].to_string().as_str()
                })
                .ok_or_else(|| anyhow::anyhow!("path '{path}': no entry has {k}={want}"))
        }
    }
}

fn parse_value(text: &str, force_string: bool) -> Value {
    if force_string {
        return Value::String(text.to_string());
    }
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

impl GenericUpdate {
    /// Applies `--set`, `--add` and `--remove`, in that order, as az does.
    pub fn apply(&self, body: &mut Value) -> anyhow::Result<()> {
        for item in &self.set {
            let (path, text) = item.split_once('=').ok_or_else(|| {
                anyhow::anyhow!(
                    "--set '{item}': expected PATH=VALUE, e.g. --set dpdTimeoutSeconds=30"
                )
            })?;
            let steps = parse_path(path)?;
            let (last, parents) = steps.split_last().expect("a path has a step");
            let mut cur = &mut *body;
            for s in parents {
                cur = step_into(cur, s, path, true)?;
            }
            let value = parse_value(text, self.force_string);
            match last {
                Step::Key(k) => {
                    let Some(map) = cur.as_object_mut() else {
                        anyhow::bail!(
                            "--set '{item}': '{k}' is inside something that is not an object"
                        );
                    };
                    let key = if map.contains_key(k) || !map.contains_key(&camel(k)) {
                        k.clone()
                    } else {
                        camel(k)
                    };
                    map.insert(key, value);
                }
                other => *step_into(cur, other, path, false)? = value,
            }
        }
        if !self.add.is_empty() {
            let (path, values) = self.add.split_first().expect("--add takes 2 or more");
            let mut cur = &mut *body;
            for s in parse_path(path)? {
                cur = step_into(cur, &s, path, true)?;
            }
            if cur.is_object() && cur.as_object().is_some_and(|m| m.is_empty()) {
                *cur = Value::Array(vec![]);
            }
            let Some(list) = cur.as_array_mut() else {
                anyhow::bail!("--add {path}: '{path}' is not a list");
            };
            if values
                .iter()
                .all(|v| v.contains('=') && !v.trim_start().starts_with('{'))
            {
                let mut obj = serde_json::Map::new();
                for v in values {
                    let (k, x) = v.split_once('=').expect("checked above");
                    obj.insert(k.to_string(), parse_value(x, self.force_string));
                }
                list.push(Value::Object(obj));
            } else {
                list.extend(values.iter().map(|v| parse_value(v, self.force_string)));
            }
        }
        if !self.remove.is_empty() {
            let path = &self.remove[0];
            let steps = parse_path(path)?;
            let (last, parents) = steps.split_last().expect("a path has a step");
            let mut cur = &mut *body;
            for s in parents {
                cur = step_into(cur, s, path, false)?;
            }
            let target = match (last, self.remove.get(1)) {
                (s, Some(index)) => {
                    cur = step_into(cur, s, path, false)?;
                    let i: usize = index.parse().map_err(|_| {
                        anyhow::anyhow!("--remove {path} {index}: '{index}' is not a list index")
                    })?;
                    Step::Index(i)
                }
                (Step::Key(k), None) => Step::Key(k.clone()),
                (Step::Index(i), None) => Step::Index(*i),
                (Step::Match(..), None) => {
                    anyhow::bail!(
                        "--remove {path}: give the list and an index, e.g. --remove egressNatRules 0"
                    )
                }
            };
            match target {
                Step::Key(k) => {
                    let removed = cur
                        .as_object_mut()
                        .and_then(|m| m.shift_remove(&k).or_else(|| m.shift_remove(&camel(&k))));
                    if removed.is_none() {
                        anyhow::bail!("--remove {path}: there is no field '{k}'");
                    }
                }
                Step::Index(i) => {
                    let Some(list) = cur.as_array_mut() else {
                        anyhow::bail!("--remove {path}: '{path}' is not a list");
                    };
                    if i >= list.len() {
                        anyhow::bail!(
                            "--remove {path} {i}: index out of range (the list has {})",
                            list.len()
                        );
                    }
                    list.remove(i);
                }
                Step::Match(..) => unreachable!("refused above"),
            }
        }
        Ok(())
    }
}

/// `wait` flags, as az's generic wait.
#[derive(clap::Args, Debug)]
pub struct WaitArgs {
    /// Wait until the resource exists with provisioningState Succeeded.
    #[arg(long)]
    pub created: bool,
    /// Wait until provisioningState is Succeeded.
    #[arg(long)]
    pub updated: bool,
    /// Wait until the resource is gone.
    #[arg(long)]
    pub deleted: bool,
    /// Wait until the resource exists.
    #[arg(long)]
    pub exists: bool,
    /// Wait until a JMESPath expression on the resource (as `show` prints it) is true, e.g.
    /// "connectionStatus=='Connected'".
    #[arg(long)]
    pub custom: Option<String>,
    /// Polling interval in seconds.
    #[arg(long, default_value_t = 30)]
    pub interval: u64,
    /// Maximum wait in seconds; exceeding it is an error (exit 1).
    #[arg(long, default_value_t = 3600)]
    pub timeout: u64,
}

/// Polls `path` until the condition of `args` holds; fails on timeout.
pub async fn wait(ctx: &crate::Ctx, path: &str, what: &str, args: &WaitArgs) -> anyhow::Result<()> {
    let chosen = [
        args.created,
        args.updated,
        args.deleted,
        args.exists,
        args.custom.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if chosen != 1 {
        anyhow::bail!(
            "wait: give exactly one of --created, --updated, --deleted, --exists, --custom JMESPATH"
        );
    }
    let custom = match &args.custom {
        Some(q) => Some(jmespath::compile(q).map_err(|e| {
            anyhow::anyhow!("--custom: '{q}' is not a valid JMESPath expression: {e}")
        })?),
        None => None,
    };
    let interval = std::time::Duration::from_secs(args.interval.max(1));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(args.timeout);
    loop {
        let got = ctx.client.call(hyper::Method::GET, path, None, None).await;
        let done = match got {
            Ok((_, resource)) => {
                let succeeded = resource["provisioningState"] == "Succeeded";
                if args.deleted {
                    false
                } else if args.exists {
                    true
                } else if args.created || args.updated {
                    succeeded
                } else if let Some(expr) = &custom {
                    let r = expr
                        .search(resource)
                        .map_err(|e| anyhow::anyhow!("--custom failed: {e}"))?;
                    r.is_truthy()
                } else {
                    false
                }
            }
            Err(e) => match e.downcast_ref::<crate::client::ApiFailure>() {
                Some(f) if f.status == 404 => args.deleted,
                _ => return Err(e),
            },
        };
        if done {
            return Ok(());
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            anyhow::bail!(
                "wait: {what} did not reach the condition within --timeout {} seconds",
                args.timeout
            );
        }
        tokio::time::sleep(interval.min(deadline - now)).await;
    }
}

/// Reads a secret (a shared key) from `path`, or from standard input when `path` is `-`, so it never
/// appears in the process list or the shell history. One trailing newline (LF or CRLF) is dropped;
/// an empty secret is refused. `flag` names the option in errors.
pub fn read_secret(flag: &str, path: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context as _;
    use std::io::Read as _;
    let mut text = String::new();
    if path == std::path::Path::new("-") {
        std::io::stdin()
            .take(64 * 1024)
            .read_to_string(&mut text)
            .with_context(|| format!("{flag} -: cannot read the key from standard input"))?;
    } else {
        let file = std::fs::File::open(path)
            .with_context(|| format!("{flag}: cannot open {}", path.display()))?;
        file.take(64 * 1024)
            .read_to_string(&mut text)
            .with_context(|| format!("{flag}: cannot read {} as text", path.display()))?;
    }
    let key = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    if key.is_empty() {
        anyhow::bail!(
            "{flag}: {} holds no key; write the key on one line",
            if path == std::path::Path::new("-") {
                "standard input".to_string()
            } else {
                path.display().to_string()
            }
        );
    }
    if key.contains('\n') {
        anyhow::bail!(
            "{flag}: the key spans several lines; write it on one line (one trailing newline is fine)"
        );
    }
    Ok(key.to_string())
}
