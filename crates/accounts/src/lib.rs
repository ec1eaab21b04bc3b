//! Accounts: users with a role and an argon2 password hash (sled tree
//! `users`), browser sessions (`sessions`), API tokens (`tokens`) and the
//! sign-in rate limiter. Owns authentication decisions (who is this?);
//! authorization per route lives with the routes. Uses `base` and its trees
//! from `store` (`store::Tree::{Users, Sessions, Tokens}`), nothing else.

mod limiter;
mod sessions;
mod tokens;

pub use limiter::{Held, LoginLimiter, CONCURRENT_VERIFICATIONS};
pub use sessions::{Session, SESSION_TTL_MS};
pub use tokens::{constant_time_eq, TokenInfo};

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use store::Tree;
use thiserror::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including users and settings.
    Admin,
    /// Read data and watch cameras.
    Viewer,
    /// Publish over MQTT and use the write APIs.
    Device,
}

impl FromStr for Role {
    type Err = AccountError;
    fn from_str(s: &str) -> Result<Role, AccountError> {
        match s {
            "admin" => Ok(Role::Admin),
            "viewer" => Ok(Role::Viewer),
            "device" => Ok(Role::Device),
            other => Err(AccountError::BadRole(other.to_string())),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
            Role::Device => "device",
        })
    }
}

#[derive(Debug, Error)]
pub enum AccountError {
    #[error("invalid user name {0:?}: use 1 to 64 letters, digits, '.', '_', '-' or '@'")]
    BadName(String),
    #[error("unknown role {0:?}: use admin, viewer or device")]
    BadRole(String),
    #[error("password must be at least {MIN_PASSWORD} characters")]
    ShortPassword,
    #[error("invalid topic filter {0:?}: use MQTT filters such as sensors/dev1/#")]
    BadTopic(String),
    #[error("user {0:?} already exists")]
    Exists(String),
    #[error("database error: {0}")]
    Db(#[from] sled::Error),
    #[error(transparent)]
    Store(#[from] store::StorageError),
    #[error("stored user {0:?} is unreadable")]
    Corrupt(String),
    #[error("password hashing failed: {0}")]
    Hash(String),
}

impl base::HasKind for AccountError {
    fn kind(&self) -> base::ErrorKind {
        use base::ErrorKind as K;
        match self {
            AccountError::Exists(_) => K::Conflict,
            AccountError::Db(_)
            | AccountError::Store(_)
            | AccountError::Corrupt(_)
            | AccountError::Hash(_) => K::Internal,
            AccountError::BadName(_)
            | AccountError::BadRole(_)
            | AccountError::ShortPassword
            | AccountError::BadTopic(_) => K::InvalidArgument,
        }
    }
}

pub const MIN_PASSWORD: usize = 8;

/// The file in the data directory saying people have had accounts here.
pub const ACCOUNTS_MARKER: &str = "accounts-existed";

/// What [`Accounts::sign_in`] decided.
#[derive(Debug)]
pub enum SignIn {
    Valid(UserInfo),
    /// An unknown user or a wrong password (deliberately alike).
    Wrong,
    /// Not checked: see [`Held`].
    Held(Held),
}

/// A user as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredUser {
    role: Role,
    password_hash: String,
    created_ms: i64,
    /// MQTT topic filters a device may publish and subscribe within.
    #[serde(default)]
    topics: Vec<String>,
}

/// A user as shown and as attached to requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub name: String,
    pub role: Role,
    pub created_ms: i64,
    /// For devices: the MQTT topic filters they may use (`sensors/dev1/#`).
    pub topics: Vec<String>,
}

impl StoredUser {
    fn info(&self, name: &str) -> UserInfo {
        UserInfo {
            name: name.to_string(),
            role: self.role,
            created_ms: self.created_ms,
            topics: self.topics.clone(),
        }
    }
}

/// Successful verifications are remembered for a while, keyed by a salted
/// hash of the credentials, so a client sending Basic auth on every request
/// (Grafana does) does not cost an argon2 hash each time.
const VERIFY_CACHE_TTL: Duration = Duration::from_secs(300);
const VERIFY_CACHE_MAX: usize = 1024;

pub struct Accounts {
    users: sled::Tree,
    sessions: sled::Tree,
    tokens: sled::Tree,
    /// Failed sign-ins, by client address and by user name, and the bound
    /// on argon2 checks ([`Accounts::sign_in`]).
    pub limiter: LoginLimiter,
    cache: Mutex<HashMap<[u8; 32], (UserInfo, Instant)>>,
    cache_salt: [u8; 16],
    /// Bumped by every deletion: a verification that started before one
    /// does not cache its (possibly deleted) user.
    generation: std::sync::atomic::AtomicU64,
    /// Verified against for unknown names, so that they take as long as
    /// known ones and do not reveal which names exist.
    dummy_hash: std::sync::OnceLock<String>,
    /// The "accounts existed" marker, see [`Accounts::accounts_lost`].
    marker: Option<std::path::PathBuf>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

/// `bytes` random bytes from the OS, as lowercase hex.
fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut buf);
    to_hex(&buf)
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Accounts {
    pub fn open(trees: &store::Trees) -> Result<Accounts, AccountError> {
        let mut cache_salt = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut cache_salt);
        Ok(Accounts {
            users: trees.open(Tree::Users)?,
            sessions: trees.open(Tree::Sessions)?,
            tokens: trees.open(Tree::Tokens)?,
            limiter: LoginLimiter::default(),
            cache: Mutex::new(HashMap::new()),
            generation: Default::default(),
            dummy_hash: Default::default(),
            cache_salt,
            marker: trees.data_dir().map(|d| d.join(ACCOUNTS_MARKER)),
        })
        .and_then(|a| {
            // Boxes whose people predate the marker get it now.
            if a.has_people() {
                a.mark_people()?;
            }
            Ok(a)
        })
    }

    /// Adds a user. A device without topic filters gets `<name>/#`.
    pub fn add(
        &self,
        name: &str,
        role: Role,
        password: &str,
        topics: &[String],
        now_ms: i64,
    ) -> Result<UserInfo, AccountError> {
        if !valid_name(name) {
            return Err(AccountError::BadName(name.to_string()));
        }
        if password.chars().count() < MIN_PASSWORD {
            return Err(AccountError::ShortPassword);
        }
        for t in topics {
            if t.is_empty() || t.contains('\0') || t.len() > 1024 {
                return Err(AccountError::BadTopic(t.clone()));
            }
        }
        let topics = if topics.is_empty() && role == Role::Device {
            vec![format!("{name}/#")]
        } else {
            topics.to_vec()
        };
        let salt = SaltString::generate(&mut OsRng);
        let hash = Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| AccountError::Hash(e.to_string()))?
            .to_string();
        let stored = StoredUser {
            role,
            password_hash: hash,
            created_ms: now_ms,
            topics,
        };
        let value = serde_json::to_vec(&stored).expect("serializable");
        let inserted = self
            .users
            .compare_and_swap(name, None as Option<&[u8]>, Some(value))?;
        if inserted.is_err() {
            return Err(AccountError::Exists(name.to_string()));
        }
        self.users.flush()?;
        if role != Role::Device {
            self.mark_people()?;
        }
        Ok(stored.info(name))
    }

    pub fn delete(&self, name: &str) -> Result<bool, AccountError> {
        let existed = self.users.remove(name)?.is_some();
        self.end_sessions_of(name)?;
        self.users.flush()?;
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.cache.lock().clear();
        Ok(existed)
    }

    pub fn list(&self) -> Result<Vec<UserInfo>, AccountError> {
        let mut out = Vec::new();
        for item in self.users.iter() {
            let (k, v) = item?;
            let name = String::from_utf8_lossy(&k).into_owned();
            let stored: StoredUser =
                serde_json::from_slice(&v).map_err(|_| AccountError::Corrupt(name.clone()))?;
            out.push(stored.info(&name));
        }
        Ok(out)
    }

    /// One user, as stored now.
    pub fn get(&self, name: &str) -> Option<UserInfo> {
        let v = self.users.get(name).ok()??;
        let stored: StoredUser = serde_json::from_slice(&v).ok()?;
        Some(stored.info(name))
    }

    /// Whether `name` could be a user name at all (the rate limiter keys
    /// only such names, bounding its memory).
    pub fn plausible_name(name: &str) -> bool {
        valid_name(name)
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether any person (admin or viewer, not a device) has an account:
    /// from then on, what people look at needs signing in.
    pub fn has_people(&self) -> bool {
        self.list()
            .map(|users| users.iter().any(|u| u.role != Role::Device))
            .unwrap_or(true)
    }

    /// The box had people's accounts, but its database no longer does: the
    /// database was damaged and set aside (or deleted). Onboarding must not
    /// hand the box to whoever reaches it first; an admin is created on the
    /// box itself instead. Known from a marker file in the data directory,
    /// outside the database, written with the first person's account.
    pub fn accounts_lost(&self) -> bool {
        self.marker.as_ref().is_some_and(|m| m.exists()) && !self.has_people()
    }

    /// Why onboarding is refused, with what to do, when [`Accounts::accounts_lost`].
    pub fn accounts_lost_reason(&self) -> Option<String> {
        let dir = self.marker.as_ref()?.parent()?;
        self.accounts_lost().then(|| {
            format!(
                "this box had accounts; its database was damaged and set aside, so nobody can sign in and onboarding is closed; create an admin on the box itself: perch user add NAME --role admin --password-stdin --data-dir {}",
                dir.display()
            )
        })
    }

    fn mark_people(&self) -> Result<(), AccountError> {
        let Some(m) = &self.marker else {
            return Ok(());
        };
        if m.exists() {
            return Ok(());
        }
        std::fs::write(
            m,
            "perch: people have had accounts on this box. If its database is lost, onboarding stays closed until an admin is created with `perch user add`.\n",
        )
        .and_then(|_| std::fs::File::open(m)?.sync_all())
        .map_err(|e| AccountError::Store(e.into()))
    }

    fn cache_key(&self, name: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.cache_salt);
        h.update(name.as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// The user, if this name and password were verified recently; no
    /// argon2 run.
    pub fn verify_cached(&self, name: &str, password: &str) -> Option<UserInfo> {
        let key = self.cache_key(name, password);
        let cache = self.cache.lock();
        cache
            .get(&key)
            .filter(|(_, at)| at.elapsed() < VERIFY_CACHE_TTL)
            .map(|(info, _)| info.clone())
    }

    /// A sign-in with a name and password from `address`, as every front
    /// end makes it (HTTP Basic, the sign-in page, MQTT CONNECT), through
    /// the [`LoginLimiter`]: held back after failures, credentials verified
    /// recently passed at once, others verified on the blocking pool at
    /// most [`CONCURRENT_VERIFICATIONS`] at a time, and a failure answered
    /// after the limiter's delay.
    pub async fn sign_in(
        self: &Arc<Self>,
        address: Option<IpAddr>,
        name: &str,
        password: &str,
        now_ms: i64,
    ) -> SignIn {
        let limiter = &self.limiter;
        let plausible = valid_name(name);
        if let Err(held) = limiter.check(address, name, plausible, now_ms) {
            return SignIn::Held(held);
        }
        if let Some(user) = self.verify_cached(name, password) {
            limiter.succeeded(address, name, now_ms);
            return SignIn::Valid(user);
        }
        let pending = match limiter.enter(address) {
            Ok(p) => p,
            Err(held) => return SignIn::Held(held),
        };
        // The address's turn is held until the answer, failure delay and all.
        let _address_turn = match pending.turn().await {
            Ok(t) => t,
            Err(held) => return SignIn::Held(held),
        };
        let verified = {
            let _turn = match limiter.verification().await {
                Ok(t) => t,
                Err(held) => return SignIn::Held(held),
            };
            // Failures counted while this one waited may hold it back now,
            // and the same credentials may have been verified meanwhile
            // (a dashboard's panels at once).
            if let Err(held) = limiter.check(address, name, plausible, now_ms) {
                return SignIn::Held(held);
            }
            if let Some(user) = self.verify_cached(name, password) {
                limiter.succeeded(address, name, now_ms);
                return SignIn::Valid(user);
            }
            let (accounts, n, p) = (self.clone(), name.to_string(), password.to_string());
            tokio::task::spawn_blocking(move || accounts.verify(&n, &p))
                .await
                .ok()
                .flatten()
        };
        match verified {
            Some(user) => {
                limiter.succeeded(address, name, now_ms);
                SignIn::Valid(user)
            }
            None => {
                let delay = limiter.failed(address, name, plausible, now_ms);
                tokio::time::sleep(delay).await;
                SignIn::Wrong
            }
        }
    }

    /// Checks a name and password; `None` for an unknown user or a wrong
    /// password (deliberately indistinguishable).
    pub fn verify(&self, name: &str, password: &str) -> Option<UserInfo> {
        if let Some(info) = self.verify_cached(name, password) {
            return Some(info);
        }
        let key = self.cache_key(name, password);
        let generation = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        let stored = self
            .users
            .get(name)
            .ok()
            .flatten()
            .and_then(|v| serde_json::from_slice::<StoredUser>(&v).ok());
        let Some(stored) = stored else {
            let dummy = self.dummy_hash.get_or_init(|| {
                let salt = SaltString::generate(&mut OsRng);
                Argon2::default()
                    .hash_password(b"no such user", &salt)
                    .map(|h| h.to_string())
                    .unwrap_or_default()
            });
            if let Ok(parsed) = PasswordHash::new(dummy) {
                let _ = Argon2::default().verify_password(password.as_bytes(), &parsed);
            }
            return None;
        };
        let parsed = PasswordHash::new(&stored.password_hash).ok()?;
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .ok()?;
        let info = stored.info(name);
        let mut cache = self.cache.lock();
        if self.generation.load(std::sync::atomic::Ordering::SeqCst) != generation {
            return Some(info);
        }
        if cache.len() >= VERIFY_CACHE_MAX {
            cache.retain(|_, (_, at)| at.elapsed() < VERIFY_CACHE_TTL);
            if cache.len() >= VERIFY_CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(key, (info.clone(), Instant::now()));
        Some(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_verify_list_delete() {
        let a = Accounts::open(&store::Trees::temporary().unwrap()).unwrap();
        assert!(a.is_empty());
        a.add("alice", Role::Admin, "correct horse", &[], 1)
            .unwrap();
        assert!(matches!(
            a.add("alice", Role::Viewer, "another pw", &[], 2),
            Err(AccountError::Exists(_))
        ));
        assert!(matches!(
            a.add("bad name", Role::Viewer, "longenough", &[], 2),
            Err(AccountError::BadName(_))
        ));
        assert!(matches!(
            a.add("bob", Role::Viewer, "short", &[], 2),
            Err(AccountError::ShortPassword)
        ));
        assert_eq!(
            a.verify("alice", "correct horse").unwrap().role,
            Role::Admin
        );
        assert!(a.verify("alice", "wrong horse").is_none());
        assert!(a.verify("nobody", "correct horse").is_none());
        // Cached path gives the same answer.
        assert!(a.verify("alice", "correct horse").is_some());
        let d = a.add("dev1", Role::Device, "device-pass", &[], 3).unwrap();
        assert_eq!(d.topics, vec!["dev1/#"]);
        assert_eq!(a.list().unwrap().len(), 2);
        assert!(a.delete("alice").unwrap());
        assert!(a.verify("alice", "correct horse").is_none());
    }
}
