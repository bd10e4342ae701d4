//! The guests file: which guests one monitor watches, and how to reach each.
//!
//! ```toml
//! [[guest]]
//! name = "web-1"
//! target = "vsock:3:5000"
//! key-file = "/etc/telebpf/web-1.key"
//! ```
//!
//! Everything is checked when the file is read, so that a monitor started
//! by systemd fails at once with one line rather than later, guest by
//! guest: names are unique and printable (they are every event's `guest`),
//! targets parse, key files are named (their mode and owner are checked
//! when each guest connects, as everywhere else).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// What is wrong with a guests file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// It could not be read.
    #[error("guests file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// It is not valid TOML of the expected shape.
    #[error("guests file {0}: {1}")]
    Parse(PathBuf, String),
    /// It names no guest.
    #[error("guests file {0}: no [[guest]]")]
    Empty(PathBuf),
    /// A guest's entry is wrong.
    #[error("guests file {0}: guest {1:?}: {2}")]
    Guest(PathBuf, String, String),
}

/// One guest to watch.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guest {
    /// The name every event of this guest carries.
    pub name: String,
    /// The proxy's address (`unix:PATH`, `vsock:CID:PORT`,
    /// `vsock-uds:PATH:PORT`).
    pub target: String,
    /// The pre-shared key file of this guest's proxy.
    #[serde(rename = "key-file")]
    pub key_file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    guest: Vec<Guest>,
}

/// The longest guest name accepted (it is in every event).
pub const MAX_NAME: usize = 64;

/// Reads and checks a guests file. A relative key-file path is taken
/// relative to the guests file's directory, as systemd units and
/// configuration management write them.
pub fn read(path: &Path) -> Result<Vec<Guest>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.into(), e))?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, base).map_err(|e| match e {
        ConfigError::Parse(_, m) => ConfigError::Parse(path.into(), m),
        ConfigError::Empty(_) => ConfigError::Empty(path.into()),
        ConfigError::Guest(_, g, m) => ConfigError::Guest(path.into(), g, m),
        other => other,
    })
}

/// [`read`] of a text, with relative key files under `base`.
pub fn parse(text: &str, base: &Path) -> Result<Vec<Guest>, ConfigError> {
    let here = PathBuf::new();
    let file: File = toml::from_str(text)
        .map_err(|e| ConfigError::Parse(here.clone(), e.message().to_string()))?;
    if file.guest.is_empty() {
        return Err(ConfigError::Empty(here));
    }
    let mut names = BTreeSet::new();
    let mut guests = Vec::with_capacity(file.guest.len());
    for mut g in file.guest {
        let bad = |m: String| ConfigError::Guest(here.clone(), g.name.clone(), m);
        if g.name.is_empty() || g.name.len() > MAX_NAME {
            return Err(bad(format!("a name is 1 to {MAX_NAME} bytes")));
        }
        if g.name.chars().any(|c| c.is_control()) {
            return Err(bad("a name has no control characters".into()));
        }
        if !names.insert(g.name.clone()) {
            return Err(bad("named twice".into()));
        }
        if let Err(e) = g.target.parse::<telebpf_protocol::address::Address>() {
            return Err(bad(format!("target {:?}: {e}", g.target)));
        }
        if g.key_file.as_os_str().is_empty() {
            return Err(bad("key-file is empty".into()));
        }
        if g.key_file.is_relative() {
            g.key_file = base.join(&g.key_file);
        }
        guests.push(g);
    }
    Ok(guests)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_guests_and_resolves_relative_keys() {
        let g = parse(
            r#"
[[guest]]
name = "web-1"
target = "vsock:3:5000"
key-file = "/etc/telebpf/web-1.key"

[[guest]]
name = "db-1"
target = "unix:/run/db.sock"
key-file = "keys/db-1.key"
"#,
            Path::new("/etc/telebpf"),
        )
        .unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].name, "web-1");
        assert_eq!(g[1].key_file, Path::new("/etc/telebpf/keys/db-1.key"));
    }

    #[test]
    fn refuses_what_would_fail_later() {
        let base = Path::new("/");
        let one = |name: &str, target: &str| {
            format!("[[guest]]\nname = {name:?}\ntarget = {target:?}\nkey-file = \"k\"\n")
        };
        assert!(matches!(parse("", base), Err(ConfigError::Empty(_))));
        assert!(matches!(
            parse(&one("a", "tcp:1.2.3.4"), base),
            Err(ConfigError::Guest(..))
        ));
        assert!(matches!(
            parse(&one("", "unix:/x"), base),
            Err(ConfigError::Guest(..))
        ));
        assert!(matches!(
            parse(&one("a\nb", "unix:/x"), base),
            Err(ConfigError::Guest(..))
        ));
        let twice = format!("{}{}", one("a", "unix:/x"), one("a", "unix:/y"));
        let e = parse(&twice, base).unwrap_err().to_string();
        assert!(e.contains("named twice"), "{e}");
        let unknown =
            "[[guest]]\nname = \"a\"\ntarget = \"unix:/x\"\nkey-file = \"k\"\nkey = \"k\"\n";
        assert!(matches!(parse(unknown, base), Err(ConfigError::Parse(..))));
    }
}
