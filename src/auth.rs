//! Users, password checks and per-vhost permissions, RabbitMQ-style.
//!
//! Passwords are stored as RabbitMQ's `rabbit_password_hashing_sha256` hashes
//! (base64 of a 4-byte salt followed by SHA-256(salt ‖ password)), so hashes
//! exported from RabbitMQ definitions can be used as they are.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use regex::Regex;
use sha2::{Digest, Sha256};

use crate::config::{PermissionConfig, UserConfig};
use crate::error::{CoreError, CoreResult, OpenError};

/// What a resource access is for, mapping to RabbitMQ's three permission kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Declare or delete.
    Configure,
    /// Publish to, or bind from an exchange's point of view: write to the destination.
    Write,
    /// Consume from, get, purge, or be bound from as a source.
    Read,
}

impl Access {
    fn as_str(self) -> &'static str {
        match self {
            Access::Configure => "configure",
            Access::Write => "write",
            Access::Read => "read",
        }
    }
}

/// A resource's kind, for error texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    /// A queue.
    Queue,
    /// An exchange.
    Exchange,
}

/// Compiled permissions of one user on one vhost.
#[derive(Debug, Clone)]
pub struct Permissions {
    configure: Rule,
    write: Rule,
    read: Rule,
}

/// One permission regex. `.*` (the default, and what most users have) matches every name —
/// an unanchored search finds the empty match at the start — so it is answered without running
/// the regex on every publish.
#[derive(Debug, Clone)]
struct Rule {
    regex: Regex,
    matches_all: bool,
}

impl Rule {
    fn is_match(&self, name: &str) -> bool {
        self.matches_all || self.regex.is_match(name)
    }
}

fn compile(pattern: &str) -> Result<Rule, regex::Error> {
    // RabbitMQ: the empty pattern is a synonym for `^$`.
    let regex = Regex::new(if pattern.is_empty() { "^$" } else { pattern })?;
    Ok(Rule { regex, matches_all: pattern == ".*" })
}

impl Permissions {
    /// Compile the three regexes.
    pub fn compile(cfg: &PermissionConfig) -> Result<Permissions, regex::Error> {
        Ok(Permissions { configure: compile(&cfg.configure)?, write: compile(&cfg.write)?, read: compile(&cfg.read)? })
    }

    fn allows(&self, access: Access, name: &str) -> bool {
        let re = match access {
            Access::Configure => &self.configure,
            Access::Write => &self.write,
            Access::Read => &self.read,
        };
        re.is_match(name)
    }
}

/// An authenticated user.
#[derive(Debug)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Tags (`administrator`, ...).
    pub tags: Vec<String>,
    password_hash: Option<Vec<u8>>,
    permissions: HashMap<String, Permissions>,
}

impl User {
    /// True if the user may use `vhost` at all.
    pub fn can_access_vhost(&self, vhost: &str) -> bool {
        self.permissions.contains_key(vhost)
    }

    /// Check `access` to a named resource in `vhost`, with RabbitMQ's refusal text.
    pub fn check(&self, vhost: &str, kind: ResourceKind, name: &str, access: Access) -> CoreResult<()> {
        let ok = self.permissions.get(vhost).is_some_and(|p| p.allows(access, name));
        if ok {
            return Ok(());
        }
        let what = match kind {
            ResourceKind::Queue => "queue",
            ResourceKind::Exchange => "exchange",
        };
        Err(CoreError::access_refused(format!(
            "{} access to {what} '{name}' in vhost '{vhost}' refused for user '{}'",
            access.as_str(),
            self.name
        )))
    }

    /// A user with full permissions on every listed vhost, for tests and internal sessions.
    pub fn superuser(name: &str, vhosts: &[&str]) -> Arc<User> {
        let full = Permissions::compile(&PermissionConfig::default()).unwrap_or_else(|_| unreachable!(".* compiles"));
        Arc::new(User {
            name: name.to_string(),
            tags: vec!["administrator".into()],
            password_hash: None,
            permissions: vhosts.iter().map(|v| (v.to_string(), full.clone())).collect(),
        })
    }

    fn password_matches(&self, password: &str) -> bool {
        match &self.password_hash {
            Some(h) if h.len() == 4 + 32 => {
                let (salt, digest) = h.split_at(4);
                let mut hasher = Sha256::new();
                hasher.update(salt);
                hasher.update(password.as_bytes());
                let computed = hasher.finalize();
                // Constant-time compare.
                computed.iter().zip(digest).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
            }
            _ => false,
        }
    }
}

/// Hash a password the way RabbitMQ's default hashing module does, with a random salt.
pub fn hash_password(password: &str) -> String {
    let salt: [u8; 4] = rand::random();
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(password.as_bytes());
    let mut out = salt.to_vec();
    out.extend_from_slice(&hasher.finalize());
    BASE64.encode(out)
}

/// The user database.
#[derive(Debug)]
pub struct Users {
    users: HashMap<String, Arc<User>>,
    loopback_only: HashSet<String>,
}

impl Users {
    /// Build from configuration; an empty list yields RabbitMQ's default `guest` user.
    pub fn from_config(users: &[UserConfig], loopback_users: &[String]) -> Result<Users, OpenError> {
        let default_guest;
        let users = if users.is_empty() {
            default_guest = vec![UserConfig {
                name: "guest".into(),
                password: Some("guest".into()),
                tags: vec!["administrator".into()],
                permissions: [("/".to_string(), PermissionConfig::default())].into_iter().collect(),
                ..UserConfig::default()
            }];
            &default_guest[..]
        } else {
            users
        };
        let mut map = HashMap::new();
        for u in users {
            let hash =
                match (&u.password_hash, &u.password) {
                    (Some(h), _) => Some(BASE64.decode(h).map_err(|e| {
                        OpenError::Config(format!("user '{}': password_hash is not base64: {e}", u.name))
                    })?),
                    (None, Some(p)) => BASE64.decode(hash_password(p)).ok(),
                    (None, None) => None,
                };
            if hash.as_ref().is_some_and(|h| h.len() != 36) {
                return Err(OpenError::Config(format!(
                    "user '{}': password_hash must be a rabbit_password_hashing_sha256 hash (36 bytes)",
                    u.name
                )));
            }
            let mut permissions = HashMap::new();
            for (vhost, p) in &u.permissions {
                let compiled = Permissions::compile(p)
                    .map_err(|e| OpenError::Config(format!("user '{}' vhost '{vhost}': {e}", u.name)))?;
                permissions.insert(vhost.clone(), compiled);
            }
            map.insert(
                u.name.clone(),
                Arc::new(User { name: u.name.clone(), tags: u.tags.clone(), password_hash: hash, permissions }),
            );
        }
        Ok(Users { users: map, loopback_only: loopback_users.iter().cloned().collect() })
    }

    /// Check a login. Errors are `AccessRefused` with RabbitMQ's wording.
    pub fn authenticate(&self, name: &str, password: &str, peer: Option<IpAddr>) -> CoreResult<Arc<User>> {
        let refused = || {
            CoreError::access_refused(
                "Login was refused using authentication mechanism PLAIN. For details see the broker logfile.",
            )
        };
        let user = self.users.get(name).ok_or_else(refused)?;
        if !user.password_matches(password) {
            return Err(refused());
        }
        if self.loopback_only.contains(name) && !peer.is_none_or(|ip| ip.is_loopback() || is_mapped_loopback(ip)) {
            return Err(CoreError::access_refused(format!("User '{name}' can only connect via localhost")));
        }
        Ok(Arc::clone(user))
    }
}

fn is_mapped_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        IpAddr::V4(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rabbitmq_hash_format_verifies() {
        let cfg =
            UserConfig { name: "u".into(), password_hash: Some(hash_password("secret")), ..UserConfig::default() };
        let users = Users::from_config(&[cfg], &[]).expect("config");
        assert!(users.authenticate("u", "secret", None).is_ok());
        assert!(users.authenticate("u", "wrong", None).is_err());
        assert!(users.authenticate("nobody", "secret", None).is_err());
    }

    #[test]
    fn guest_is_loopback_only() {
        let users = Users::from_config(&[], &["guest".to_string()]).expect("config");
        assert!(users.authenticate("guest", "guest", Some("127.0.0.1".parse().expect("ip"))).is_ok());
        assert!(users.authenticate("guest", "guest", Some("10.0.0.1".parse().expect("ip"))).is_err());
    }

    #[test]
    fn permissions_are_regex_searches() {
        let perms = PermissionConfig { configure: "^amq\\.gen".into(), write: ".*".into(), read: "".into() };
        let cfg = UserConfig {
            name: "u".into(),
            password: Some("p".into()),
            permissions: [("/".to_string(), perms)].into_iter().collect(),
            ..UserConfig::default()
        };
        let users = Users::from_config(&[cfg], &[]).expect("config");
        let u = users.authenticate("u", "p", None).expect("login");
        assert!(u.check("/", ResourceKind::Queue, "amq.gen-1", Access::Configure).is_ok());
        assert!(u.check("/", ResourceKind::Queue, "orders", Access::Configure).is_err());
        assert!(u.check("/", ResourceKind::Queue, "orders", Access::Read).is_err());
        assert!(u.check("/", ResourceKind::Queue, "orders", Access::Write).is_ok());
        assert!(!u.can_access_vhost("other"));
    }
}
