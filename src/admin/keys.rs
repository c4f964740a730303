//! Key handlers: create, list, get, update, revoke, rotate, make primary.
//!
//! Input is validated completely before the admin lock is taken; the checks that depend on
//! stored state (the account's key limit, revocation, the primary key) run inside the write
//! transaction, so they cannot race another change. The one-time secret appears only in the
//! create and rotate answers and never reaches the audit log.

use http::StatusCode;
use serde_json::{Value, json};

use super::api::{KeyObject, Success};
use super::input::{self, Fields, LimitsPatch};
use super::{AdminResponse, ApiError, Changes, Ctx, Query, change, json, views};
use crate::config::parse_duration;
use crate::keys;
use crate::policy::Limits;
use crate::scope::Scopes;
use crate::store::{AccountRecord, GraceRecord, KeyFilter, KeyRecord, StoreError, WriteTx};
use crate::usage::key_subject;

/// Longest grace period a rotation may give the old secret.
const MAX_GRACE_MS: i64 = 90 * 24 * 3600 * 1000;
/// SPEC §3: list `limit` default and maximum.
const LIST_DEFAULT: usize = 100;
const LIST_MAX: usize = 1000;

pub async fn create(ctx: &Ctx, body: &[u8]) -> Result<AdminResponse, ApiError> {
    let config = ctx.app.config();
    let now = ctx.app.clock.now_ms();
    let mut f = Fields::parse(body)?;
    let name = input::name(
        f.take::<String>("name")?
            .ok_or_else(|| ApiError::invalid("name", "name is required"))?,
    )?;
    let account = match f.take::<String>("account")? {
        Some(a) => input::account_name("account", &a)?,
        None => "default".to_owned(),
    };
    let scopes: Scopes = match f.take::<Vec<String>>("scopes")? {
        Some(list) => input::scopes(list)?.into_iter().collect(),
        None => config.keys.default_scopes.iter().copied().collect(),
    };
    let expires_at_ms = take_expiry(&mut f, now)?.flatten();
    let allowed_origins = take_list(&mut f, "allowed_origins", input::origins)?.unwrap_or_default();
    let allowed_ips = take_list(&mut f, "allowed_ips", input::ips)?.unwrap_or_default();
    let allowed_models = take_list(&mut f, "allowed_models", input::models)?.unwrap_or_default();
    let limits = LimitsPatch::take(&mut f)?.apply(Limits::default());
    let metadata = match f.take::<Value>("metadata")? {
        Some(v) => input::metadata(v)?,
        None => "{}".to_owned(),
    };
    f.finish()?;

    let secret = keys::generate(&config.keys.prefix)?;
    let mut record = KeyRecord {
        id: keys::new_id(now)?,
        account,
        name,
        hash: secret.hash.0,
        previous: None,
        key_prefix: secret.display.clone(),
        scopes: scopes.bits(),
        is_active: true,
        primary: false,
        created_at_ms: now,
        expires_at_ms,
        revoked_at_ms: None,
        allowed_origins,
        allowed_ips,
        allowed_models,
        limits: limits.to_record(),
        metadata,
    };
    let default_limit = config.keys.max_active_per_account;
    let actor = ctx.peer.actor();
    let record = change(ctx, move |tx, changes| {
        let keys = ensure_account(tx, changes, &record.account, now)?;
        check_key_limit(tx, &record.account, &keys, default_limit, now)?;
        record.primary = !keys.iter().any(|k| k.primary && k.is_live());
        tx.put_key(&record, None)?;
        let details = json!({"name": record.name, "account": record.account,
            "scopes": Scopes::from_bits(record.scopes), "primary": record.primary});
        tx.audit(now, actor, "key.create", Some(&record.id), details)?;
        changes.keys.push((None, record.clone()));
        Ok(record)
    })
    .await?;
    tracing::info!(key_id = %record.id, account = %record.account, "key created");
    let mut object = one(ctx, record).await?;
    object.key = Some(secret.secret.expose().to_owned());
    Ok(json(StatusCode::CREATED, &object))
}

pub async fn list(ctx: &Ctx, query: &Query) -> Result<AdminResponse, ApiError> {
    let account = query
        .get("account")
        .map(|a| input::account_name("account", a))
        .transpose()
        .map_err(|e| ApiError::InvalidQuery {
            param: "account".into(),
            message: e.to_string(),
        })?;
    let include_inactive = query.flag("include_inactive")?;
    let limit = query.limit("limit", LIST_DEFAULT, LIST_MAX)?;
    let before = query.get("before").map(str::to_owned);
    if let Some(b) = &before
        && !keys::valid_id(b)
    {
        return Err(ApiError::InvalidQuery {
            param: "before".into(),
            message: "before must be a key id".into(),
        });
    }
    let now = ctx.app.clock.now_ms();
    let page = ctx
        .app
        .blocking(move |app| {
            app.store.read(|tx| {
                tx.list_keys(KeyFilter {
                    account: account.as_deref(),
                    include_inactive,
                    before: before.as_deref(),
                    limit,
                    now_ms: now,
                })
            })
        })
        .await
        .map_err(ApiError::from)?;
    Ok(json(StatusCode::OK, &objects(ctx, page.keys).await?))
}

pub async fn get(ctx: &Ctx, id: &str) -> Result<AdminResponse, ApiError> {
    let record = load(ctx, id).await?;
    Ok(json(StatusCode::OK, &one(ctx, record).await?))
}

/// The parsed body of a PATCH: `None` leaves a field as it is.
struct Patch {
    name: Option<String>,
    account: Option<String>,
    scopes: Option<Scopes>,
    expires_at_ms: Option<Option<i64>>,
    allowed_origins: Option<Vec<String>>,
    allowed_ips: Option<Vec<String>>,
    allowed_models: Option<Vec<String>>,
    limits: LimitsPatch,
    metadata: Option<String>,
    is_active: Option<bool>,
}

pub async fn update(ctx: &Ctx, id: &str, body: &[u8]) -> Result<AdminResponse, ApiError> {
    check_id(id)?;
    let now = ctx.app.clock.now_ms();
    let mut f = Fields::parse(body)?;
    let patch = Patch {
        name: f.take::<String>("name")?.map(input::name).transpose()?,
        account: f
            .take::<String>("account")?
            .map(|a| input::account_name("account", &a))
            .transpose()?,
        scopes: f
            .take::<Vec<String>>("scopes")?
            .map(|s| input::scopes(s).map(|v| v.into_iter().collect()))
            .transpose()?,
        expires_at_ms: take_expiry(&mut f, now)?,
        allowed_origins: take_list(&mut f, "allowed_origins", input::origins)?,
        allowed_ips: take_list(&mut f, "allowed_ips", input::ips)?,
        allowed_models: take_list(&mut f, "allowed_models", input::models)?,
        limits: LimitsPatch::take(&mut f)?,
        metadata: f
            .take::<Value>("metadata")?
            .map(input::metadata)
            .transpose()?,
        is_active: f.take::<bool>("is_active")?,
    };
    f.finish()?;

    let default_limit = ctx.app.config().keys.max_active_per_account;
    let actor = ctx.peer.actor();
    let id = id.to_owned();
    let record = change(ctx, move |tx, changes| {
        let old = tx
            .key(&id)?
            .ok_or_else(|| ApiError::not_found("key", &id))?;
        if old.revoked_at_ms.is_some() {
            return Err(revoked(&id));
        }
        let mut new = old.clone();
        let mut changed = Vec::new();
        macro_rules! set {
            ($field:ident, $value:expr) => {
                if let Some(v) = $value {
                    if new.$field != v {
                        new.$field = v;
                        changed.push(stringify!($field));
                    }
                }
            };
        }
        set!(name, patch.name);
        set!(account, patch.account);
        set!(scopes, patch.scopes.map(Scopes::bits));
        set!(expires_at_ms, patch.expires_at_ms);
        set!(allowed_origins, patch.allowed_origins);
        set!(allowed_ips, patch.allowed_ips);
        set!(allowed_models, patch.allowed_models);
        set!(metadata, patch.metadata);
        set!(is_active, patch.is_active);
        let limits = patch.limits.apply(Limits::from_record(&old.limits));
        set!(limits, Some(limits.to_record()));
        let moved = new.account != old.account;
        let counts_before = old.counts_as_active(now) && !moved;
        if new.counts_as_active(now) && !counts_before {
            let keys = ensure_account(tx, changes, &new.account, now)?;
            check_key_limit(tx, &new.account, &keys, default_limit, now)?;
        }
        if moved || !new.is_live() {
            new.primary = false;
        }
        if new.is_live() && !new.primary {
            let keys = tx.account_keys(&new.account)?;
            new.primary = !keys
                .iter()
                .any(|k| k.id != new.id && k.primary && k.is_live());
        }
        tx.put_key(&new, Some(&old))?;
        changes.keys.push((Some(old.clone()), new.clone()));
        if old.primary && !new.primary {
            promote_successor(tx, changes, &old.account, now)?;
        }
        tx.audit(
            now,
            actor,
            "key.update",
            Some(&id),
            json!({ "changed": changed }),
        )?;
        Ok(new)
    })
    .await?;
    let success = Success {
        success: true,
        key: Some(one(ctx, record).await?),
        account: None,
    };
    Ok(json(StatusCode::OK, &success))
}

pub async fn revoke(ctx: &Ctx, id: &str) -> Result<AdminResponse, ApiError> {
    check_id(id)?;
    let now = ctx.app.clock.now_ms();
    let actor = ctx.peer.actor();
    let id = id.to_owned();
    let id = change(ctx, move |tx, changes| {
        let old = tx
            .key(&id)?
            .ok_or_else(|| ApiError::not_found("key", &id))?;
        if old.revoked_at_ms.is_some() {
            return Ok(id);
        }
        let mut new = old.clone();
        new.revoked_at_ms = Some(now);
        new.primary = false;
        new.previous = None;
        tx.put_key(&new, Some(&old))?;
        changes.keys.push((Some(old.clone()), new));
        if old.primary {
            promote_successor(tx, changes, &old.account, now)?;
        }
        tx.audit(now, actor, "key.revoke", Some(&id), json!({}))?;
        Ok(id)
    })
    .await?;
    tracing::info!(key_id = %id, "key revoked");
    Ok(json(StatusCode::OK, &json!({"success": true})))
}

pub async fn rotate(ctx: &Ctx, id: &str, body: &[u8]) -> Result<AdminResponse, ApiError> {
    check_id(id)?;
    let now = ctx.app.clock.now_ms();
    let mut f = Fields::parse(body)?;
    let grace_ms = match f.take::<String>("grace")? {
        None => 0,
        Some(text) => {
            let d = parse_duration(&text).map_err(|e| ApiError::invalid("grace", e))?;
            let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
            if ms > MAX_GRACE_MS {
                return Err(ApiError::invalid("grace", "grace must be at most 90d"));
            }
            ms
        }
    };
    f.finish()?;
    let prefix = ctx.app.config().keys.prefix.clone();
    let secret = keys::generate(&prefix)?;
    let actor = ctx.peer.actor();
    let (id, hash, display) = (id.to_owned(), secret.hash.0, secret.display.clone());
    let record = change(ctx, move |tx, changes| {
        let old = tx.key(&id)?.ok_or_else(|| ApiError::not_found("key", &id))?;
        if old.revoked_at_ms.is_some() {
            return Err(revoked(&id));
        }
        let mut new = old.clone();
        new.hash = hash;
        new.key_prefix = display;
        new.previous = (grace_ms > 0).then_some(GraceRecord {
            hash: old.hash,
            until_ms: now.saturating_add(grace_ms),
        });
        tx.put_key(&new, Some(&old))?;
        let details = json!({"grace": crate::config::format_duration(std::time::Duration::from_millis(grace_ms as u64))});
        tx.audit(now, actor, "key.rotate", Some(&id), details)?;
        changes.keys.push((Some(old), new.clone()));
        Ok(new)
    })
    .await?;
    tracing::info!(key_id = %record.id, grace_ms, "key rotated");
    let mut object = one(ctx, record).await?;
    object.key = Some(secret.secret.expose().to_owned());
    Ok(json(StatusCode::OK, &object))
}

pub async fn make_primary(ctx: &Ctx, id: &str) -> Result<AdminResponse, ApiError> {
    check_id(id)?;
    let now = ctx.app.clock.now_ms();
    let actor = ctx.peer.actor();
    let id = id.to_owned();
    change(ctx, move |tx, changes| {
        let old = tx
            .key(&id)?
            .ok_or_else(|| ApiError::not_found("key", &id))?;
        if !old.is_live() {
            return Err(ApiError::Conflict {
                code: "key_inactive",
                message: format!("key {id} is revoked or disabled and cannot be primary"),
            });
        }
        if old.primary {
            return Ok(());
        }
        for other in tx.account_keys(&old.account)? {
            if other.primary && other.id != id {
                let mut demoted = other.clone();
                demoted.primary = false;
                tx.put_key(&demoted, Some(&other))?;
                changes.keys.push((Some(other), demoted));
            }
        }
        let mut new = old.clone();
        new.primary = true;
        tx.put_key(&new, Some(&old))?;
        changes.keys.push((Some(old), new));
        tx.audit(now, actor, "key.primary", Some(&id), json!({}))?;
        Ok(())
    })
    .await?;
    Ok(json(StatusCode::OK, &json!({"success": true})))
}

/// Key objects with their usage totals (flushed and not), read off the async workers.
async fn objects(ctx: &Ctx, records: Vec<KeyRecord>) -> Result<Vec<KeyObject>, ApiError> {
    ctx.app
        .blocking(move |app| {
            records
                .iter()
                .map(|r| {
                    let (usage, last_used) = app.usage_totals(&key_subject(&r.id))?;
                    Ok(views::key_object(r, usage, last_used))
                })
                .collect::<Result<Vec<_>, StoreError>>()
        })
        .await
        .map_err(ApiError::from)
}

async fn one(ctx: &Ctx, record: KeyRecord) -> Result<KeyObject, ApiError> {
    objects(ctx, vec![record])
        .await?
        .pop()
        .ok_or_else(|| ApiError::Internal("a key object went missing".into()))
}

async fn load(ctx: &Ctx, id: &str) -> Result<KeyRecord, ApiError> {
    check_id(id)?;
    let owned = id.to_owned();
    ctx.app
        .blocking(move |app| app.store.read(|tx| tx.key(&owned)))
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| ApiError::not_found("key", id))
}

/// Ids that cannot exist answer 404 without a lookup.
fn check_id(id: &str) -> Result<(), ApiError> {
    if keys::valid_id(id) {
        Ok(())
    } else {
        Err(ApiError::not_found("key", id))
    }
}

fn revoked(id: &str) -> ApiError {
    ApiError::Conflict {
        code: "key_revoked",
        message: format!("key {id} is revoked; revocation is final"),
    }
}

/// `expires_at` (RFC 3339) or `expires_in` (duration); not both. `Some(None)` clears.
fn take_expiry(f: &mut Fields, now: i64) -> Result<Option<Option<i64>>, ApiError> {
    let at = f.take_nullable::<String>("expires_at")?;
    let within = f.take::<String>("expires_in")?;
    match (at, within) {
        (Some(_), Some(_)) => Err(ApiError::invalid(
            "expires_at",
            "give expires_at or expires_in, not both",
        )),
        (Some(None), None) => Ok(Some(None)),
        (Some(Some(text)), None) => {
            let ms = crate::clock::parse_rfc3339(&text).ok_or_else(|| {
                ApiError::invalid("expires_at", "expires_at must be an RFC 3339 timestamp")
            })?;
            if ms <= now {
                return Err(ApiError::invalid("expires_at", "expires_at is in the past"));
            }
            Ok(Some(Some(ms)))
        }
        (None, Some(text)) => {
            let d = parse_duration(&text).map_err(|e| ApiError::invalid("expires_in", e))?;
            if d.is_zero() {
                return Err(ApiError::invalid(
                    "expires_in",
                    "expires_in must be positive",
                ));
            }
            let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
            let at = now.saturating_add(ms);
            if !crate::clock::in_range(at) {
                return Err(ApiError::invalid(
                    "expires_in",
                    "expires_in reaches past the year 9999",
                ));
            }
            Ok(Some(Some(at)))
        }
        (None, None) => Ok(None),
    }
}

fn take_list(
    f: &mut Fields,
    field: &str,
    check: fn(Vec<String>) -> Result<Vec<String>, ApiError>,
) -> Result<Option<Vec<String>>, ApiError> {
    f.take::<Vec<String>>(field)?.map(check).transpose()
}

/// Returns the account's keys, creating the account with default settings if it is new.
fn ensure_account(
    tx: &mut WriteTx,
    changes: &mut Changes,
    account: &str,
    now: i64,
) -> Result<Vec<KeyRecord>, ApiError> {
    if tx.account(account)?.is_none() {
        let record = AccountRecord {
            name: account.to_owned(),
            created_at_ms: now,
            max_active_keys: None,
            limits: Default::default(),
        };
        tx.put_account(&record)?;
        changes.accounts.push(record);
    }
    Ok(tx.account_keys(account)?)
}

/// 409 `key_limit_reached` when one more active key would exceed the account's limit.
fn check_key_limit(
    tx: &WriteTx,
    account: &str,
    keys: &[KeyRecord],
    default_limit: u32,
    now: i64,
) -> Result<(), ApiError> {
    let limit = tx
        .account(account)?
        .and_then(|a| a.max_active_keys)
        .unwrap_or(default_limit);
    let active = keys.iter().filter(|k| k.counts_as_active(now)).count();
    if active >= limit as usize {
        return Err(ApiError::Conflict {
            code: "key_limit_reached",
            message: format!("account {account} already has {active} active keys (limit {limit})"),
        });
    }
    Ok(())
}

/// After an account lost its primary key, makes its oldest live key primary (preferring one
/// that has not expired), so the account keeps exactly one while it has any.
fn promote_successor(
    tx: &mut WriteTx,
    changes: &mut Changes,
    account: &str,
    now: i64,
) -> Result<(), ApiError> {
    let keys = tx.account_keys(account)?;
    if keys.iter().any(|k| k.primary && k.is_live()) {
        return Ok(());
    }
    let successor = keys
        .iter()
        .find(|k| k.counts_as_active(now))
        .or_else(|| keys.iter().find(|k| k.is_live()));
    if let Some(old) = successor.cloned() {
        let mut new = old.clone();
        new.primary = true;
        tx.put_key(&new, Some(&old))?;
        changes.keys.push((Some(old), new));
    }
    Ok(())
}
