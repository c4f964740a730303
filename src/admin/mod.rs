//! The admin API of SPEC §3: HTTP/1.1 JSON over the Unix socket.
//!
//! Routes (a plain `match` in [`route`]):
//!
//! | method | path | handler |
//! |---|---|---|
//! | GET, POST | `/api/keys` | `keys::list`, `keys::create` |
//! | GET, PATCH, DELETE | `/api/keys/{id}` | `keys::get`, `keys::update`, `keys::revoke` |
//! | POST | `/api/keys/{id}/rotate` | `keys::rotate` |
//! | POST | `/api/keys/{id}/primary` | `keys::make_primary` |
//! | GET, POST | `/api/accounts` | `accounts::list`, `accounts::create` |
//! | GET, PATCH, DELETE | `/api/accounts/{name}` | `accounts::get`, `accounts::update`, `accounts::delete` |
//! | GET | `/api/audit` | `system::audit` |
//! | GET | `/api/usage` | `usage::get` |
//! | POST | `/api/explain` | `explain::explain` |
//! | GET | `/api/status` | `system::status` |
//! | GET | `/api/config`, POST `/api/config/reload` | `system::config`, `system::reload` |
//! | GET | `/metrics` | `system::metrics` (Prometheus text) |
//!
//! Every connection's peer is checked with `SO_PEERCRED` before anything else; a peer that is not
//! allowed gets 403 on every request and nothing else. Changes are serialised by the app's admin
//! lock, committed durably, applied to the in-memory index, and only then answered.

mod accounts;
pub mod api;
mod error;
mod explain;
pub mod input;
mod keys;
mod system;
mod usage;
mod views;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use serde::Serialize;
use tokio::net::UnixListener;
use tokio::sync::watch;

pub use error::ApiError;

use crate::app::App;
use crate::net::Backoff;
use crate::net::unix::Peer;

/// Largest admin request body: key and account objects are a few KiB at most.
const MAX_BODY: usize = 1024 * 1024;
/// How long open admin connections may take to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(5);

pub type AdminResponse = Response<Full<Bytes>>;

/// One admin request's context: the app and who is asking.
pub struct Ctx {
    pub app: Arc<App>,
    pub peer: Peer,
}

/// Accepts admin connections until `stop` turns true, then drains them.
pub async fn serve(listener: UnixListener, app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
    let mut backoff = Backoff::new();
    loop {
        let stream = tokio::select! {
            _ = crate::net::stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => { backoff.reset(); stream }
                Err(e) => { backoff.wait("admin", &e).await; continue; }
            },
        };
        let peer = match Peer::of(&stream) {
            Ok(peer) => peer,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read admin peer credentials; closing");
                continue;
            }
        };
        let config = app.config();
        let allowed = peer.is_allowed(
            app.own_uid,
            &config.admin.allowed_uids,
            &config.admin.allowed_gids,
        );
        if !allowed {
            tracing::warn!(
                uid = peer.uid,
                gid = peer.gid,
                pid = peer.pid,
                "admin peer refused"
            );
        }
        let app = Arc::clone(&app);
        let service = hyper::service::service_fn(move |req| {
            let ctx = Ctx {
                app: Arc::clone(&app),
                peer: peer.clone(),
            };
            async move { Ok::<_, std::convert::Infallible>(handle(ctx, req, allowed).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("admin connections did not finish within {DRAIN:?}; closing them");
    }
}

/// The outer handler: never fails, maps every error to its response, logs the call.
async fn handle(ctx: Ctx, req: Request<Incoming>, allowed: bool) -> AdminResponse {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let result = if allowed {
        route(ctx, req).await
    } else {
        Err(ApiError::Forbidden)
    };
    match result {
        Ok(resp) => {
            tracing::debug!(%method, %path, status = resp.status().as_u16(), "admin request");
            resp
        }
        Err(err) => {
            let allow = match &err {
                ApiError::MethodNotAllowed { allow, .. } => Some(*allow),
                _ => None,
            };
            if err.status().is_server_error() {
                tracing::error!(%method, %path, error = ?err, "admin request failed");
            } else {
                tracing::info!(%method, %path, status = err.status().as_u16(), code = %err.code(), "admin request refused");
            }
            let mut resp = json(err.status(), &err.body());
            if let Some(allow) = allow {
                // RFC 9110 §15.5.6: a 405 names the methods the resource has.
                resp.headers_mut()
                    .insert(header::ALLOW, header::HeaderValue::from_static(allow));
            }
            resp
        }
    }
}

async fn route(ctx: Ctx, req: Request<Incoming>) -> Result<AdminResponse, ApiError> {
    let (parts, body) = req.into_parts();
    let method = parts.method.clone();
    let query = Query::parse(parts.uri.query());
    let path = parts.uri.path().to_owned();
    // Segments are percent-decoded, so a name a client had to encode still finds its target.
    let decoded: Vec<String> = path
        .trim_end_matches('/')
        .split('/')
        .skip(1)
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let not_allowed = |allow: &'static str| ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: path.clone(),
        allow,
    };
    let body = read_body(body).await?;
    match (segments.as_slice(), &method) {
        (["api", "keys"], &Method::GET) => keys::list(&ctx, &query).await,
        (["api", "keys"], &Method::POST) => keys::create(&ctx, &body).await,
        (["api", "keys"], _) => Err(not_allowed("GET, POST")),
        (["api", "keys", id], &Method::GET) => keys::get(&ctx, id).await,
        (["api", "keys", id], &Method::PATCH) => keys::update(&ctx, id, &body).await,
        (["api", "keys", id], &Method::DELETE) => keys::revoke(&ctx, id).await,
        (["api", "keys", _], _) => Err(not_allowed("GET, PATCH, DELETE")),
        (["api", "keys", id, "rotate"], &Method::POST) => keys::rotate(&ctx, id, &body).await,
        (["api", "keys", id, "primary"], &Method::POST) => keys::make_primary(&ctx, id).await,
        (["api", "keys", _, "rotate" | "primary"], _) => Err(not_allowed("POST")),
        (["api", "accounts"], &Method::GET) => accounts::list(&ctx).await,
        (["api", "accounts"], &Method::POST) => accounts::create(&ctx, &body).await,
        (["api", "accounts"], _) => Err(not_allowed("GET, POST")),
        (["api", "accounts", name], &Method::GET) => accounts::get(&ctx, name).await,
        (["api", "accounts", name], &Method::PATCH) => accounts::update(&ctx, name, &body).await,
        (["api", "accounts", name], &Method::DELETE) => accounts::delete(&ctx, name).await,
        (["api", "accounts", _], _) => Err(not_allowed("GET, PATCH, DELETE")),
        (["api", "audit"], &Method::GET) => system::audit(&ctx, &query).await,
        (["api", "usage"], &Method::GET) => usage::get(&ctx, &query).await,
        (["api", "explain"], &Method::POST) => explain::explain(&ctx, &body).await,
        (["api", "status"], &Method::GET) => system::status(&ctx).await,
        (["api", "config"], &Method::GET) => system::config(&ctx).await,
        (["api", "config", "reload"], &Method::POST) => system::reload(&ctx).await,
        (["metrics"], &Method::GET) => system::metrics(&ctx).await,
        (["api", "audit" | "status" | "config" | "usage"] | ["metrics"], _) => {
            Err(not_allowed("GET"))
        }
        (["api", "explain"] | ["api", "config", "reload"], _) => Err(not_allowed("POST")),
        _ => Err(ApiError::NoRoute {
            method: method.to_string(),
            path: path.clone(),
        }),
    }
}

async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::TooLarge(MAX_BODY)),
        Err(e) => Err(ApiError::BadBody(format!("cannot read the body: {e}"))),
    }
}

/// A JSON response.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> AdminResponse {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// Decoded query parameters.
pub struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: Option<&str>) -> Query {
        Query(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A numeric parameter within `1..=max`, `default` when absent.
    pub fn limit(&self, name: &str, default: usize, max: usize) -> Result<usize, ApiError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::InvalidQuery {
                    param: name.to_owned(),
                    message: format!("{name} must be a whole number from 1 to {max}"),
                }),
            },
        }
    }

    /// A boolean parameter: `true`/`1` or `false`/`0`, `false` when absent.
    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.get(name) {
            None | Some("false" | "0" | "") => Ok(false),
            Some("true" | "1") => Ok(true),
            Some(_) => Err(ApiError::InvalidQuery {
                param: name.to_owned(),
                message: format!("{name} must be true or false"),
            }),
        }
    }
}

/// What a committed admin change did, for the in-memory index to follow.
#[derive(Default)]
pub struct Changes {
    /// Keys written: (record before, record after).
    pub keys: Vec<(Option<crate::store::KeyRecord>, crate::store::KeyRecord)>,
    /// Accounts created or changed.
    pub accounts: Vec<crate::store::AccountRecord>,
    /// Accounts deleted.
    pub removed_accounts: Vec<String>,
}

/// Runs one admin change: under the admin lock, `f` runs in a durable write transaction; once it
/// has committed, its [`Changes`] are applied to the in-memory index; only then does this return.
/// If `f` fails, nothing is written and nothing in memory changes.
pub async fn change<T: Send + 'static>(
    ctx: &Ctx,
    f: impl FnOnce(&mut crate::store::WriteTx, &mut Changes) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let _guard = ctx.app.admin_guard().await;
    let (value, changes) = ctx
        .app
        .blocking(move |app| {
            app.store.write(|tx| {
                let mut changes = Changes::default();
                let value = f(tx, &mut changes)?;
                Ok::<_, ApiError>((value, changes))
            })
        })
        .await?;
    let keyring = &ctx.app.keyring;
    for account in &changes.accounts {
        keyring.apply_account(account);
    }
    for name in &changes.removed_accounts {
        keyring.remove_account(name);
    }
    for (old, new) in &changes.keys {
        keyring.apply(old.as_ref(), new)?;
    }
    seed_quotas(ctx, &changes).await?;
    Ok(value)
}

/// Puts quota counters in place for keys and accounts whose quota period was set or changed
/// (seeded from the store and the unflushed meter), and removes them where it was cleared.
async fn seed_quotas(ctx: &Ctx, changes: &Changes) -> Result<(), ApiError> {
    use crate::keyring::QuotaHolder;
    use crate::policy::Limits;
    let keyring = &ctx.app.keyring;
    let mut holders: Vec<(QuotaHolder, String, Option<crate::policy::QuotaPeriod>)> = Vec::new();
    for (_, key) in &changes.keys {
        if let Some(state) = keyring.find_key(key) {
            let period = Limits::from_record(&key.limits).quota.map(|q| q.period);
            holders.push((
                QuotaHolder::Key(state),
                crate::usage::key_subject(&key.id),
                period,
            ));
        }
    }
    for account in &changes.accounts {
        let state = keyring.account(&account.name);
        let period = Limits::from_record(&account.limits).quota.map(|q| q.period);
        holders.push((
            QuotaHolder::Account(state),
            crate::usage::account_subject(&account.name),
            period,
        ));
    }
    let mut to_seed = Vec::new();
    for (holder, subject, period) in holders {
        let current = holder.slot().load().as_ref().map(|c| c.period());
        match period {
            None => holder.slot().store(None),
            Some(p) if current != Some(p) => to_seed.push((holder, subject, p)),
            Some(_) => {}
        }
    }
    if to_seed.is_empty() {
        return Ok(());
    }
    let seeded = ctx
        .app
        .blocking(move |app| {
            let now = app.clock.now_ms();
            to_seed
                .into_iter()
                .map(|(holder, subject, period)| {
                    let counters =
                        crate::usage::flush::seed(&app.store, &app.meter, &subject, period, now)?;
                    Ok((holder, counters))
                })
                .collect::<Result<Vec<_>, crate::store::StoreError>>()
        })
        .await
        .map_err(ApiError::from)?;
    for (holder, counters) in seeded {
        holder.slot().store(Some(std::sync::Arc::new(counters)));
    }
    Ok(())
}
