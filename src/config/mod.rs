//! Configuration: TOML file + environment → one validated, typed, immutable [`Config`].
//!
//! `source` reads the text and resolves overrides and `${…}` references, `raw` holds the file shapes
//! (serde, unknown keys rejected), `validate` checks everything and builds the typed config. Every error
//! carries its dotted key path and the expected form; none carries a secret value. Loading reports
//! **all** errors at once.

pub mod dynamic;
pub mod presets;
pub mod profiles_dir;
mod raw;
pub mod source;
pub mod store_refs;
pub mod token_shape;
mod upstream;
mod validate;
pub mod webhook;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;

pub use source::Env;
pub use token_shape::{TokenRequestShape, TokenResponseShape};
pub use upstream::{GrantOrigin, HostPattern, Seg, UpstreamUrl};

use crate::secret::{
    AdminToken, ApiKey, BearerAssertionKey, ClientAssertionKey, ClientSecret, Password, StoreKey,
    StoreUrl, Username,
};
use crate::template::Template;

/// Default config file, relative to the working directory.
pub const DEFAULT_CONFIG_PATH: &str = "config/authsidecar.toml";
/// Environment variable naming the config file (the `-c` flag wins).
pub const CONFIG_ENV: &str = "AUTHSIDECAR_CONFIG";

pub const DEFAULT_PROXY_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9901";
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_BODY_TOTAL_TIMEOUT: Duration = Duration::from_secs(120);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;
pub const DEFAULT_MAX_HEADERS: usize = 100;
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
pub const DEFAULT_MAX_URI_BYTES: usize = 8 * 1024;

/// One config error: where and what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: &str, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every error found in one config.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The validated configuration. Immutable; shared as `Arc<Config>`.
#[derive(Debug)]
pub struct Config {
    pub proxy: ProxySettings,
    pub admin: AdminSettings,
    pub routes: Vec<Route>,
    pub profiles: IndexMap<Arc<str>, Arc<Profile>>,
    /// `[mock_provider]`: run the built-in mock provider (demo and tests).
    pub mock_provider: Option<MockProviderConfig>,
    /// `[store]`: where tokens are kept (memory when absent).
    pub store: StoreConfig,
    /// `[auth]`: the listener end users' browsers reach (login links, callback).
    pub auth: Option<AuthSettings>,
    /// `[connectors.NAME]`.
    pub connectors: IndexMap<String, Arc<Connector>>,
    /// `[webhooks.NAME]`: receivers of grant events.
    pub webhooks: IndexMap<String, Arc<webhook::Webhook>>,
    /// Accepted but risky choices (legacy grants, plain http); logged at start, printed by `check`.
    pub warnings: Vec<String>,
    /// What each profile's `preset` filled (printed by `check`).
    pub presets: Vec<presets::PresetUse>,
}

/// An address range: `10.0.0.0/8`, `::1/128`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

impl IpNet {
    pub fn parse(s: &str) -> Option<IpNet> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: std::net::IpAddr = a.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.trim().parse::<u8>().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(IpNet { addr, prefix })
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr::{V4, V6};
        let ip = match ip {
            V6(v6) => v6.to_ipv4_mapped().map_or(V6(v6), V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (V4(n), V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (V6(n), V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub listen: SocketAddr,
    /// HTTP/1: time to receive a complete request head, counted from its first byte (or from accept,
    /// for a connection's first request). The gap between keep-alive requests is `idle_timeout`.
    pub header_read_timeout: Duration,
    /// Longest wait for the next piece of a request body.
    pub body_read_timeout: Duration,
    /// Longest time for a whole request body, counted from the request head: a body that trickles
    /// (a byte now and then, each within `body_read_timeout`) still ends.
    pub body_total_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
    /// Default time for an upstream to start answering (per route: `timeout`).
    pub upstream_timeout: Duration,
    /// On shutdown, how long in-flight requests may take to finish.
    pub drain_timeout: Duration,
    pub max_body_bytes: u64,
    /// Open connections across all workers; past it new connections get a bare 503 and are closed.
    pub max_connections: usize,
    /// Header fields in one HTTP/1 request head (more → 431).
    pub max_headers: usize,
    /// Bytes in one request head, request line included (more → 431); also HTTP/2's header list.
    pub max_header_bytes: usize,
    /// Bytes in the request target, path plus query (more → 414 `uri_too_long`).
    pub max_uri_bytes: usize,
    /// Keys (profile, tenant, user) the token cache holds before it evicts the oldest.
    pub max_cached_tokens: usize,
    /// Peers whose `X-Forwarded-*` / `Forwarded` headers are kept (and `X-Forwarded-For`
    /// appended to); from any other peer they are removed and `X-Forwarded-For` is its address.
    pub trusted_proxies: Vec<IpNet>,
    /// Proxy worker threads, each with its own event loop, listener (SO_REUSEPORT) and upstream
    /// connection pool; the token cache is shared. Default: one per CPU.
    pub workers: usize,
    pub tls: Option<ServerTls>,
    /// One log line per request (target `authsidecar::access`, INFO).
    pub access_log: bool,
    /// Plain-TCP HTTP/1.1 requests that the fast front end can carry take it; `false` sends every
    /// request through the general (hyper) front end.
    pub fast_path: bool,
    /// The Linux scheduling policy of the proxy worker threads.
    pub worker_scheduling: WorkerScheduling,
}

/// `proxy.worker_scheduling`: how the proxy worker threads are scheduled (Linux).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerScheduling {
    /// `SCHED_BATCH` (when the process started with the default policy): a worker woken by a socket does not preempt the task running on its CPU (the
    /// caller, the upstream, anything else on the node); it runs when that task sleeps or its time
    /// slice ends, and finds more work waiting. Same nice value, same share of the CPU.
    Batch,
    /// The policy the process started with (`SCHED_OTHER`, under which a woken worker may preempt
    /// the running task, unless the operator set another).
    Normal,
}

pub const DEFAULT_STORE_PATH: &str = "data/tokens.db";
pub const DEFAULT_TICKET_TTL: Duration = Duration::from_secs(600);
pub const DEFAULT_MAX_LINK_ATTEMPTS: u64 = 5;
pub const DEFAULT_MAX_USER_ATTEMPTS: u64 = 20;
pub const DEFAULT_USER_ATTEMPT_WINDOW: Duration = Duration::from_secs(3600);

/// `[auth]`.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub listen: SocketAddr,
    /// How browsers reach the auth listener, without a trailing `/`; the callback link is
    /// `{public_url}/oauth/callback`.
    pub public_url: String,
    /// Lifetime of a login link and of an authorization in progress.
    pub ticket_ttl: Duration,
    /// Credential checks at the IdP (password grant) one login link allows; then it is spent.
    pub max_link_attempts: u64,
    /// Credential checks per profile and user in one `user_attempt_window` (fixed window), across
    /// every link and replica.
    pub max_user_attempts: u64,
    pub user_attempt_window: Duration,
    pub tls: Option<ServerTls>,
}

impl AuthSettings {
    /// The "Bots Callback Link" registered at the IdP.
    pub fn callback_url(&self) -> String {
        format!("{}/oauth/callback", self.public_url)
    }
}

/// `[store]`.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    Memory,
    /// Encrypted embedded database; `key` and `previous_key` are 32-byte AES-256-GCM keys.
    File {
        path: PathBuf,
        key: StoreKey,
        previous_key: Option<StoreKey>,
    },
    /// Shared by replicas: grants, tickets, `state`, machine tokens and refresh locks.
    Redis {
        /// `redis://[user:password@]host:port/db` or `rediss://…` (TLS); may hold a password. With
        /// `cluster`, the seed nodes of a Redis Cluster.
        urls: Vec<StoreUrl>,
        cluster: bool,
        /// Prepended to every key.
        prefix: String,
        key: StoreKey,
        previous_key: Option<StoreKey>,
        /// Bound on every Redis call (connect, command).
        timeout: Duration,
    },
}

pub const DEFAULT_REDIS_PREFIX: &str = "authsidecar:";
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(1000);

/// `[mock_provider]`: the built-in mock provider with one client and one user.
#[derive(Debug, Clone)]
pub struct MockProviderConfig {
    pub listen: SocketAddr,
    pub token_lifetime: Duration,
    pub client_id: String,
    pub client_secret: ClientSecret,
    pub username: String,
    pub password: Password,
    /// `client_keys`: the client's public keys; it may then authenticate with `private_key_jwt`.
    pub client_keys: Option<crate::sign::verify::PublicKeys>,
    /// `bearer_issuer` and `bearer_keys`: a trusted JWT bearer grant issuer.
    pub bearer_issuer: Option<(String, crate::sign::verify::PublicKeys)>,
    /// `[mock_provider.sigv4]`: the SigV4-verifying resource (`/sigv4/…`).
    pub sigv4: MockSigV4,
    /// `[mock_provider.hmac]`: the HMAC-verifying resource (`/hmac/…`).
    pub hmac: MockHmac,
}

/// The mock provider's SigV4-verifying resource: the credentials, region and service it accepts.
#[derive(Debug, Clone)]
pub struct MockSigV4 {
    pub access_key_id: String,
    pub secret_access_key: crate::secret::AwsSecretAccessKey,
    /// When set, requests must carry it as `X-Amz-Security-Token`.
    pub session_token: Option<crate::secret::AwsSessionToken>,
    pub region: String,
    pub service: String,
}

/// The AWS documentation's example key id, the mock's default.
pub const DEFAULT_MOCK_SIGV4_ACCESS_KEY_ID: &str = "AKIDEXAMPLE";
/// The AWS documentation's example secret key, the mock's default.
pub const DEFAULT_MOCK_SIGV4_SECRET_ACCESS_KEY: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
pub const DEFAULT_MOCK_SIGV4_REGION: &str = "us-east-1";
pub const DEFAULT_MOCK_SIGV4_SERVICE: &str = "execute-api";

impl Default for MockSigV4 {
    fn default() -> Self {
        MockSigV4 {
            access_key_id: DEFAULT_MOCK_SIGV4_ACCESS_KEY_ID.into(),
            secret_access_key: DEFAULT_MOCK_SIGV4_SECRET_ACCESS_KEY.into(),
            session_token: None,
            region: DEFAULT_MOCK_SIGV4_REGION.into(),
            service: DEFAULT_MOCK_SIGV4_SERVICE.into(),
        }
    }
}

/// The mock provider's HMAC-verifying resource: the signature it expects (the keys of an `hmac`
/// profile) and the header fields that carry it, its time and its nonce.
#[derive(Debug, Clone)]
pub struct MockHmac {
    pub secret: crate::secret::HmacSecret,
    pub secret_encoding: crate::sign::hmac::SecretEncoding,
    pub algorithm: crate::sign::hmac::Algorithm,
    pub encoding: crate::sign::hmac::Encoding,
    pub string_to_sign: String,
    /// Lowercase header names.
    pub signature_header: String,
    pub timestamp_header: String,
    pub nonce_header: String,
    /// How far the timestamp may be from the mock's clock.
    pub max_skew: Duration,
}

pub const DEFAULT_MOCK_HMAC_SECRET: &str = "demo-hmac-secret";
pub const DEFAULT_MOCK_HMAC_STRING_TO_SIGN: &str =
    "{{method}}\\n{{path}}\\n{{query}}\\n{{timestamp}}\\n{{body_sha256}}";
pub const DEFAULT_MOCK_HMAC_SIGNATURE_HEADER: &str = "x-signature";
pub const DEFAULT_MOCK_HMAC_TIMESTAMP_HEADER: &str = "x-timestamp";
pub const DEFAULT_MOCK_HMAC_NONCE_HEADER: &str = "x-nonce";
pub const DEFAULT_MOCK_SIGNED_MAX_SKEW: Duration = Duration::from_secs(300);

impl Default for MockHmac {
    fn default() -> Self {
        MockHmac {
            secret: DEFAULT_MOCK_HMAC_SECRET.into(),
            secret_encoding: crate::sign::hmac::SecretEncoding::Utf8,
            algorithm: crate::sign::hmac::Algorithm::Sha256,
            encoding: crate::sign::hmac::Encoding::Hex,
            string_to_sign: DEFAULT_MOCK_HMAC_STRING_TO_SIGN.into(),
            signature_header: DEFAULT_MOCK_HMAC_SIGNATURE_HEADER.into(),
            timestamp_header: DEFAULT_MOCK_HMAC_TIMESTAMP_HEADER.into(),
            nonce_header: DEFAULT_MOCK_HMAC_NONCE_HEADER.into(),
            max_skew: DEFAULT_MOCK_SIGNED_MAX_SKEW,
        }
    }
}

/// `secret_encoding` names (of `hmac` profiles and the mock's resource).
pub const HMAC_SECRET_ENCODINGS: [(&str, crate::sign::hmac::SecretEncoding); 3] = [
    ("utf8", crate::sign::hmac::SecretEncoding::Utf8),
    ("base64", crate::sign::hmac::SecretEncoding::Base64),
    ("hex", crate::sign::hmac::SecretEncoding::Hex),
];
/// `algorithm` names.
pub const HMAC_ALGORITHMS: [(&str, crate::sign::hmac::Algorithm); 3] = [
    ("sha1", crate::sign::hmac::Algorithm::Sha1),
    ("sha256", crate::sign::hmac::Algorithm::Sha256),
    ("sha512", crate::sign::hmac::Algorithm::Sha512),
];
/// `encoding` names.
pub const HMAC_ENCODINGS: [(&str, crate::sign::hmac::Encoding); 2] = [
    ("hex", crate::sign::hmac::Encoding::Hex),
    ("base64", crate::sign::hmac::Encoding::Base64),
];

/// The value named `name` in `choices`, or the message saying what is expected.
pub fn named<T: Copy>(choices: &[(&str, T)], name: &str) -> Result<T, String> {
    match choices.iter().find(|(n, _)| *n == name) {
        Some((_, t)) => Ok(*t),
        None => {
            let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
            Err(format!(
                "unknown value \"{name}\"; expected {}",
                names.join(", ")
            ))
        }
    }
}

impl MockHmac {
    /// The signer it checks with. Errors name the key (`string_to_sign`, `secret`), never a value.
    pub fn signer(&self) -> Result<crate::sign::hmac::Signer, String> {
        crate::sign::hmac::Signer::new(
            &self.string_to_sign,
            self.secret.expose(),
            self.secret_encoding,
            self.algorithm,
            self.encoding,
        )
        .map_err(|e| e.to_string())
    }
}

pub const DEFAULT_MOCK_CLIENT_ID: &str = "demo-client";
pub const DEFAULT_MOCK_CLIENT_SECRET: &str = "demo-secret";
pub const DEFAULT_MOCK_USERNAME: &str = "demo-user";
pub const DEFAULT_MOCK_PASSWORD: &str = "demo-password";
pub const DEFAULT_MOCK_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub struct AdminSettings {
    pub listen: SocketAddr,
    /// Bearer token for `/admin/*`; without one those endpoints answer 403.
    pub token: Option<AdminToken>,
    pub tls: Option<ServerTls>,
    /// `profiles_dir`: one profile per `NAME.toml`, loaded with the main file; the profile form
    /// writes there ([`profiles_dir`]).
    pub profiles_dir: Option<PathBuf>,
}

/// TLS settings for connections the sidecar makes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ClientTls {
    /// PEM CA bundle trusted *instead of* the system roots.
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain and key presented to the server (2-way TLS); both or neither.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Name checked against the server's certificate (and sent as SNI) instead of the URL's host.
    pub server_name: Option<String>,
}

/// `tls = { cert, key, client_ca }` of a listener.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Require client certificates signed by these CAs (mTLS from service nodes).
    pub client_ca: Option<PathBuf>,
}

/// `[connectors.NAME]`: an egress proxy that upstream and IdP traffic goes through.
#[derive(Debug, Clone)]
pub struct Connector {
    pub name: String,
    /// `http://host:port` of the proxy.
    pub url: http::Uri,
    /// Sent as `Proxy-Authorization: Basic …` to the connector only.
    pub credentials: Option<(Username, Password)>,
    /// Hosts reached directly: exact names, `.suffix` (or `*.suffix`) for a domain and its
    /// subdomains, `*` for all.
    pub no_proxy: Vec<String>,
}

impl Connector {
    /// Whether `host` bypasses the connector (`no_proxy` is lowercased at load).
    pub fn bypasses(&self, host: &str) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        self.no_proxy.iter().any(|p| {
            if p == "*" {
                return true;
            }
            let p = p.strip_prefix('*').unwrap_or(p);
            match p.strip_prefix('.') {
                Some(suffix) => host == suffix || host.ends_with(&format!(".{suffix}")),
                None => host == p,
            }
        })
    }
}

#[derive(Debug)]
pub struct Route {
    pub prefix: String,
    pub upstream: UpstreamUrl,
    /// Allowed profiles; the first is the default.
    pub profiles: Vec<Arc<str>>,
    pub tls: ClientTls,
    pub timeout: Duration,
    /// Egress for the upstream (else the selected profile's connector, else direct).
    pub connector: Option<Arc<Connector>>,
    /// `upstream_hosts`: the hosts an upstream taken from a grant (`{{grant.NAME}}`) may have.
    pub upstream_hosts: Vec<HostPattern>,
}

/// Profile type and its credentials.
#[derive(Debug)]
pub enum ProfileKind {
    None,
    Basic {
        username: Username,
        password: Password,
    },
    ApiKey {
        key: ApiKey,
    },
    /// `basic` with `per_user = true`: each end user enters a username and password.
    UserBasic,
    /// `api_key` with `per_user = true`: each end user enters their key.
    UserApiKey,
    OAuth(Box<OAuthSettings>),
    /// `aws_sigv4`, `hmac`, `oauth1`: every request is signed (the pipeline's sign phase).
    Sign(Arc<Signing>),
}

/// How a signing profile signs each request, its keys parsed and its signer built at load.
#[derive(Debug)]
pub struct Signing {
    pub method: SignMethod,
    /// A body that must be signed is read within this many bytes (413 past it).
    pub max_signed_body_bytes: u64,
    /// The profile's secret values (`secret_access_key`, `session_token`, `secret`,
    /// `consumer_secret`, `token`, `token_secret`): the signers keep theirs as keys, so the Test's
    /// report masks these wherever an upstream echoes them.
    pub secrets: Vec<crate::sign::SecretBytes>,
}

/// The signer of a signing profile.
#[derive(Debug)]
pub enum SignMethod {
    SigV4 {
        signer: crate::sign::sigv4::Signer,
        payload: crate::sign::sigv4::Payload,
        /// Shown by the admin API (not a secret).
        access_key_id: String,
        region: String,
        service: String,
    },
    Hmac {
        signer: crate::sign::hmac::Signer,
    },
    OAuth1 {
        client: crate::sign::oauth1::Client,
        /// The static token (token-based and two-legged with a token); `None` with `three_legged`
        /// (each end user's token comes from their grant) and in plain two-legged use.
        token: Option<(crate::secret::OAuth1Token, crate::secret::OAuth1TokenSecret)>,
        realm: Option<String>,
        placement: OAuth1Placement,
        /// `per_user = true`: the provider's endpoints of the three-legged flow (RFC 5849 §2).
        three_legged: Option<OAuth1Endpoints>,
    },
}

/// The endpoints of three-legged OAuth 1.0a (RFC 5849 §2): temporary credentials, resource owner
/// authorization, token credentials.
#[derive(Debug, Clone)]
pub struct OAuth1Endpoints {
    /// POSTed, signed, with `oauth_callback` when the end user opens the start page.
    pub request_token_url: String,
    /// Where the end user's browser is sent with `oauth_token`.
    pub authorization_url: String,
    /// POSTed, signed with the request token, with `oauth_verifier` on the callback.
    pub access_token_url: String,
    /// TLS for the three endpoints (`tls`).
    pub tls: ClientTls,
    /// Each token request, connect to last byte (`idp_timeout`).
    pub idp_timeout: Duration,
}

impl SignMethod {
    /// Whether the body must be read whole to sign a request with this content type.
    pub fn needs_body(&self, content_type: Option<&[u8]>) -> bool {
        match self {
            SignMethod::SigV4 { payload, .. } => *payload == crate::sign::sigv4::Payload::Signed,
            SignMethod::Hmac { signer } => {
                use crate::sign::hmac::Field;
                signer.uses(Field::Body) || signer.uses(Field::BodySha256)
            }
            SignMethod::OAuth1 { placement, .. } => {
                *placement == OAuth1Placement::Form
                    || content_type.is_some_and(crate::sign::oauth1::is_form)
            }
        }
    }
}

/// Where OAuth 1.0a protocol parameters go (RFC 5849 §3.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OAuth1Placement {
    Header,
    Query,
    Form,
}

impl OAuth1Placement {
    pub fn as_str(self) -> &'static str {
        match self {
            OAuth1Placement::Header => "header",
            OAuth1Placement::Query => "query",
            OAuth1Placement::Form => "form",
        }
    }
}

impl OAuthSettings {
    /// Whether any of the profile's IdP URLs needs a tenant.
    pub fn needs_tenant(&self) -> bool {
        self.token_url_has_tenant
            || match &self.grant {
                Grant::AuthorizationCode(c) => [
                    Some(&c.authorization_url),
                    c.refresh_url.as_ref(),
                    c.revocation_url.as_ref(),
                ]
                .into_iter()
                .flatten()
                .any(|u| u.contains("{tenant}")),
                _ => false,
            }
            || self
                .dynamic
                .iter()
                .any(|u| u.var == dynamic::DynVar::Tenant)
    }
}

/// A profile's `type`: which credential it injects, and so which keys it takes (each type's keys
/// are the key groups its variant of the file shape reads, see `raw::RawKind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProfileType {
    None,
    Basic,
    ApiKey,
    ClientCredentials,
    Password,
    AuthorizationCode,
    JwtBearer,
    AwsSigV4,
    Hmac,
    OAuth1,
}

impl ProfileType {
    pub const ALL: [ProfileType; 10] = [
        ProfileType::None,
        ProfileType::Basic,
        ProfileType::ApiKey,
        ProfileType::ClientCredentials,
        ProfileType::Password,
        ProfileType::AuthorizationCode,
        ProfileType::JwtBearer,
        ProfileType::AwsSigV4,
        ProfileType::Hmac,
        ProfileType::OAuth1,
    ];

    /// The name written in the config's `type`.
    pub fn name(self) -> &'static str {
        match self {
            ProfileType::None => "none",
            ProfileType::Basic => "basic",
            ProfileType::ApiKey => "api_key",
            ProfileType::ClientCredentials => "oauth2_client_credentials",
            ProfileType::Password => "oauth2_password",
            ProfileType::AuthorizationCode => "oauth2_authorization_code",
            ProfileType::JwtBearer => "oauth2_jwt_bearer",
            ProfileType::AwsSigV4 => "aws_sigv4",
            ProfileType::Hmac => "hmac",
            ProfileType::OAuth1 => "oauth1",
        }
    }

    /// The type a config's `type` names.
    pub fn from_name(name: &str) -> Option<ProfileType> {
        ProfileType::ALL.into_iter().find(|t| t.name() == name)
    }

    /// An OAuth 2.0 type (its tokens come from an identity provider).
    pub fn is_oauth(self) -> bool {
        matches!(
            self,
            ProfileType::ClientCredentials
                | ProfileType::Password
                | ProfileType::AuthorizationCode
                | ProfileType::JwtBearer
        )
    }
}

impl ProfileKind {
    pub fn profile_type(&self) -> ProfileType {
        match self {
            ProfileKind::None => ProfileType::None,
            ProfileKind::Basic { .. } | ProfileKind::UserBasic => ProfileType::Basic,
            ProfileKind::ApiKey { .. } | ProfileKind::UserApiKey => ProfileType::ApiKey,
            ProfileKind::OAuth(o) => match o.grant {
                Grant::ClientCredentials => ProfileType::ClientCredentials,
                Grant::Password { .. } | Grant::UserPassword => ProfileType::Password,
                Grant::AuthorizationCode(_) => ProfileType::AuthorizationCode,
                Grant::JwtBearer(_) => ProfileType::JwtBearer,
            },
            ProfileKind::Sign(s) => match s.method {
                SignMethod::SigV4 { .. } => ProfileType::AwsSigV4,
                SignMethod::Hmac { .. } => ProfileType::Hmac,
                SignMethod::OAuth1 { .. } => ProfileType::OAuth1,
            },
        }
    }

    pub fn type_name(&self) -> &'static str {
        self.profile_type().name()
    }

    pub fn oauth(&self) -> Option<&OAuthSettings> {
        match self {
            ProfileKind::OAuth(o) => Some(o),
            _ => None,
        }
    }
}

/// How a machine token is obtained.
#[derive(Debug, Clone)]
pub enum Grant {
    ClientCredentials,
    /// A service account's username and password (RFC 6749 §4.3; legacy, RFC 9700 §2.4).
    Password {
        username: Username,
        password: Password,
    },
    /// Per end user: the user signs in at the IdP through a login link (RFC 6749 §4.1).
    AuthorizationCode(AuthCodeSettings),
    /// Per end user (`per_user = true`): the user enters their username and password on the start
    /// page; they are exchanged at once and only the tokens are kept.
    UserPassword,
    /// A signed JWT as the grant (RFC 7523 §2.1, `oauth2_jwt_bearer`).
    JwtBearer(Box<JwtBearerSettings>),
}

/// `oauth2_jwt_bearer`: how each assertion is made.
#[derive(Debug, Clone)]
pub struct JwtBearerSettings {
    pub key: BearerAssertionKey,
    /// `assertion_claims` (with `iss` and `aud` from `credentials_file`), in order; `iat`, `exp`
    /// and a fresh `jti` are added per assertion.
    pub claims: Vec<(String, Claim)>,
    /// `exp` − `iat`, seconds (60 to 3600).
    pub lifetime: u64,
    /// A claim uses `{{user}}` (per-user delegation): tokens are kept per end user, and a request
    /// without `X-Authsidecar-User` is refused.
    pub per_user: bool,
}

/// One claim of a JWT bearer assertion.
#[derive(Debug, Clone)]
pub enum Claim {
    /// A fixed value (a string, number, boolean, array or table).
    Value(serde_json::Value),
    /// A string using `{{tenant}}` or `{{user}}`, rendered per token request.
    Template(Template),
    /// The token URL as requested (the default `aud`).
    TokenUrl,
}

/// The authorization-code part of an `oauth2_authorization_code` profile.
#[derive(Debug, Clone)]
pub struct AuthCodeSettings {
    /// May contain `{tenant}`.
    pub authorization_url: String,
    /// Token endpoint for refreshes (default: `token_url`).
    pub refresh_url: Option<String>,
    /// RFC 7009 endpoint, called when a grant is deleted.
    pub revocation_url: Option<String>,
    /// PKCE S256 (never `plain`).
    pub pkce: bool,
    /// Names of the `{{context.<name>}}` values the profile's identity-provider requests use
    /// (its URLs, scope and token parameters): a login ticket keeps them, then the grant.
    pub authorization_context: Vec<String>,
}

/// An "Additional Field": a value the end user enters on the start page, kept with the grant and
/// available to field values as `{{user_field.<key>}}`.
#[derive(Debug, Clone)]
pub struct UserField {
    pub key: String,
    pub label: String,
    /// Entered in a password input; never shown back.
    pub secret: bool,
    /// The whole value must match (the pattern is anchored at both ends).
    pub pattern: Option<regex::Regex>,
    pub max_length: usize,
}

pub const DEFAULT_USER_FIELD_MAX_LENGTH: usize = 256;

/// How the client authenticates at the token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientAuth {
    /// `client_secret_basic`: id and secret form-urlencoded, then base64, in `Authorization`.
    Basic,
    /// `client_secret_post`: id and secret in the form body.
    Post,
    /// Public client: `client_id` in the body, no secret.
    None,
    /// RFC 7523 §2.2 / OIDC Core §9: a JWT signed with the client's private key.
    PrivateKeyJwt,
    /// The same, signed HS256 with the client secret.
    ClientSecretJwt,
}

impl ClientAuth {
    /// The name written in the config's `client_auth`.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::Basic => "basic",
            ClientAuth::Post => "post",
            ClientAuth::None => "none",
            ClientAuth::PrivateKeyJwt => "private_key_jwt",
            ClientAuth::ClientSecretJwt => "client_secret_jwt",
        }
    }
}

/// How a client assertion is signed and addressed (`private_key_jwt`, `client_secret_jwt`).
#[derive(Debug, Clone)]
pub struct ClientAssertion {
    pub key: ClientAssertionKey,
    /// `aud`; `None`: the token URL as requested.
    pub audience: Option<String>,
}

pub const DEFAULT_IDP_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_REPLAY_MAX_BODY_BYTES: u64 = 64 * 1024;

/// Settings of an OAuth 2.0 profile.
#[derive(Debug, Clone)]
pub struct OAuthSettings {
    pub grant: Grant,
    /// Token endpoint; may contain `{tenant}`. Empty: the discovered one (`discover`).
    pub token_url: String,
    pub token_url_has_tenant: bool,
    /// The provider's issuer. For authorization codes also the `iss` expected on the callback
    /// (RFC 9207, checked when set) and the `iss` an `id_token` must carry.
    pub issuer: Option<String>,
    /// Read the issuer's discovery document (RFC 8414, OpenID Connect Discovery): set when
    /// `issuer` is given and an endpoint the type needs (`token_url`, `authorization_url`) is not
    /// (it then comes from the document; written ones win), or when an authorization-code scope
    /// asks for `openid` (the provider's JWKS). Every OAuth 2.0 type may use it.
    pub discover: bool,
    pub client_id: String,
    pub client_secret: Option<ClientSecret>,
    pub client_auth: ClientAuth,
    /// Set exactly when `client_auth` is `private_key_jwt` or `client_secret_jwt`.
    pub client_assertion: Option<ClientAssertion>,
    /// `scope` key/value pairs sent with the token request.
    pub scope: Vec<(String, String)>,
    /// Extra token-request parameters (`audience`, `resource`, …).
    pub token_params: Vec<(String, String)>,
    /// Where `{tenant}`, `{{context.NAME}}` and `{{user_field.NAME}}` appear in the profile's
    /// identity-provider URLs, scope and token parameters ([`dynamic`]).
    pub dynamic: Vec<dynamic::DynUse>,
    /// `token_request`: the profile writes its token requests itself.
    pub token_request: Option<TokenRequestShape>,
    /// `token_response`: where the members of the token response are, and the token's type.
    pub token_response: Option<TokenResponseShape>,
    /// TLS for the token endpoint.
    pub tls: ClientTls,
    /// Egress for the token, refresh and revocation endpoints.
    pub connector: Option<Arc<Connector>>,
    /// Whole token request, connect to last byte.
    pub idp_timeout: Duration,
    /// Lifetime assumed when the IdP sends no `expires_in`.
    pub default_token_lifetime: Duration,
    /// Refresh this long before expiry (at most half the lifetime).
    pub refresh_before: Duration,
    /// Upstream statuses that mean "token refused": refresh once and replay.
    pub reauth_on: Vec<u16>,
    /// A token younger than this is kept after a `reauth_on` answer (the answer passes through).
    pub reauth_min_token_age: Duration,
    /// Largest request body kept for a replay.
    pub replay_max_body_bytes: u64,
    /// Hash of everything that decides which token the IdP returns.
    pub fingerprint: u64,
}

#[derive(Debug)]
pub struct Profile {
    pub name: Arc<str>,
    pub kind: ProfileKind,
    pub identity_provider: Option<String>,
    pub tenancy: bool,
    /// `tenant_pattern`: the tenant values allowed (the whole value must match); `None`: one DNS
    /// label. The characters refused in every tenant are refused whatever it says.
    pub tenant_pattern: Option<regex::Regex>,
    pub fields: Vec<Field>,
    /// Asked of the end user on the start page (per-user profiles).
    pub user_fields: Vec<UserField>,
    /// Credentials belong to end users (always for authorization code; `per_user = true` for
    /// basic, api_key and oauth2_password).
    pub per_user: bool,
    /// POSTed `{profile, user, tenant}` after a user's grant is stored.
    pub on_authorized: Option<String>,
    /// The webhooks this profile's grant events go to (`webhooks = [...]`, and the
    /// `on_authorized` shorthand).
    pub webhooks: Vec<Arc<webhook::Webhook>>,
    /// `keep_alive`: a grant not refreshed for this long is refreshed in the background.
    pub keep_alive: Option<Duration>,
    /// Egress for the profile's IdP requests, and for upstream requests made with it on routes that
    /// name no connector of their own.
    pub connector: Option<Arc<Connector>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Location {
    Header,
    Query,
    Payload,
    Path,
}

impl Location {
    pub fn as_str(self) -> &'static str {
        match self {
            Location::Header => "header",
            Location::Query => "query",
            Location::Payload => "payload",
            Location::Path => "path",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PayloadFormat {
    Json,
    Form,
}

/// An "Authorization Field": where a credential goes.
#[derive(Debug, Clone)]
pub struct Field {
    pub location: Location,
    /// Header name (lowercase), query parameter, payload key or JSON Pointer, or path placeholder.
    pub key: String,
    pub value: Template,
    /// Format of a body created when the request has none (payload only).
    pub payload_format: PayloadFormat,
}

impl Config {
    /// Parses and validates config text.
    pub fn from_str_with_env(text: &str, env: &Env) -> Result<Config, ConfigErrors> {
        let (table, mut errors, origins) = source::resolve(text, env).map_err(ConfigErrors)?;
        match validate::validate(table, env) {
            Ok(config) if errors.is_empty() => Ok(config),
            Ok(_) => Err(ConfigErrors(origins.annotate(errors))),
            Err(more) => {
                // A key whose reference failed still holds the unexpanded text: drop errors about
                // its value, the reference error says it all.
                let failed: Vec<String> = errors.iter().map(|e| e.path.clone()).collect();
                errors.extend(more.into_iter().filter(|e| !failed.contains(&e.path)));
                Err(ConfigErrors(origins.annotate(errors)))
            }
        }
    }

    /// Reads, parses and validates a config file (with the process environment).
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Config::load_with(path, &Env::for_file(path))
    }

    /// Reads, parses and validates a config file with `env` (see [`Env::for_file`]).
    pub fn load_with(path: &Path, env: &Env) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError::new(
                "",
                format!("cannot read config file {}: {e}", path.display()),
            )])
        })?;
        Config::from_str_with_env(&text, env)
    }

    pub fn profile(&self, name: &str) -> Option<&Arc<Profile>> {
        self.profiles.get(name)
    }
}
