//! Account handlers: create, list, get, update, delete.
//!
//! An account groups keys; its `rate_limit`, `token_limit` and `quota`, when set, are shared by
//! all of its keys, and `max_active_keys` overrides `keys.max_active_per_account`. Accounts are
//! also created implicitly by the first key that names them.

use http::StatusCode;
use serde_json::json;

use super::api::{AccountObject, Success};
use super::input::{self, Fields, LimitsPatch};
use super::{AdminResponse, ApiError, Ctx, change, json, views};
use crate::policy::Limits;
use crate::store::{AccountRecord, KeyRecord, StoreError};
use crate::usage::account_subject;

pub async fn create(ctx: &Ctx, body: &[u8]) -> Result<AdminResponse, ApiError> {
    let now = ctx.app.clock.now_ms();
    let mut f = Fields::parse(body)?;
    let name = f
        .take::<String>("name")?
        .ok_or_else(|| ApiError::invalid("name", "name is required"))?;
    let name = input::account_name("name", &name)?;
    let max_active_keys = f
        .take::<u32>("max_active_keys")?
        .map(max_keys)
        .transpose()?;
    let limits = LimitsPatch::take(&mut f)?.apply(Limits::default());
    f.finish()?;
    let record = AccountRecord {
        name,
        created_at_ms: now,
        max_active_keys,
        limits: limits.to_record(),
    };
    let actor = ctx.peer.actor();
    let record = change(ctx, move |tx, changes| {
        if tx.account(&record.name)?.is_some() {
            return Err(ApiError::Conflict {
                code: "account_exists",
                message: format!("account {} already exists", record.name),
            });
        }
        tx.put_account(&record)?;
        tx.audit(now, actor, "account.create", Some(&record.name), json!({}))?;
        changes.accounts.push(record.clone());
        Ok(record)
    })
    .await?;
    Ok(json(
        StatusCode::CREATED,
        &one(ctx, record, Vec::new()).await?,
    ))
}

pub async fn list(ctx: &Ctx) -> Result<AdminResponse, ApiError> {
    let accounts = ctx
        .app
        .blocking(|app| {
            app.store.read(|tx| {
                tx.accounts()?
                    .into_iter()
                    .map(|a| {
                        let keys = tx.account_keys(&a.name)?;
                        Ok((a, keys))
                    })
                    .collect::<Result<Vec<_>, crate::store::StoreError>>()
            })
        })
        .await
        .map_err(ApiError::from)?;
    Ok(json(StatusCode::OK, &objects(ctx, accounts).await?))
}

pub async fn get(ctx: &Ctx, name: &str) -> Result<AdminResponse, ApiError> {
    let owned = name.to_owned();
    let found = ctx
        .app
        .blocking(move |app| {
            app.store.read(|tx| match tx.account(&owned)? {
                Some(a) => Ok(Some((a, tx.account_keys(&owned)?))),
                None => Ok::<_, crate::store::StoreError>(None),
            })
        })
        .await
        .map_err(ApiError::from)?;
    let (account, keys) = found.ok_or_else(|| ApiError::not_found("account", name))?;
    Ok(json(StatusCode::OK, &one(ctx, account, keys).await?))
}

pub async fn update(ctx: &Ctx, name: &str, body: &[u8]) -> Result<AdminResponse, ApiError> {
    let now = ctx.app.clock.now_ms();
    let mut f = Fields::parse(body)?;
    let max_active_keys = f
        .take_nullable::<u32>("max_active_keys")?
        .map(|v| v.map(max_keys).transpose())
        .transpose()?;
    let limits = LimitsPatch::take(&mut f)?;
    f.finish()?;
    let actor = ctx.peer.actor();
    let owned = name.to_owned();
    let (account, keys) = change(ctx, move |tx, changes| {
        let old = tx
            .account(&owned)?
            .ok_or_else(|| ApiError::not_found("account", &owned))?;
        let mut new = old.clone();
        if let Some(max) = max_active_keys {
            new.max_active_keys = max;
        }
        new.limits = limits.apply(Limits::from_record(&old.limits)).to_record();
        tx.put_account(&new)?;
        let mut changed = Vec::new();
        if new.max_active_keys != old.max_active_keys {
            changed.push("max_active_keys");
        }
        if new.limits != old.limits {
            changed.push("limits");
        }
        tx.audit(
            now,
            actor,
            "account.update",
            Some(&owned),
            json!({ "changed": changed }),
        )?;
        changes.accounts.push(new.clone());
        let keys = tx.account_keys(&owned)?;
        Ok((new, keys))
    })
    .await?;
    let success = Success {
        success: true,
        key: None,
        account: Some(one(ctx, account, keys).await?),
    };
    Ok(json(StatusCode::OK, &success))
}

/// Deletes an account that has no live keys; its revoked keys keep their history.
pub async fn delete(ctx: &Ctx, name: &str) -> Result<AdminResponse, ApiError> {
    let now = ctx.app.clock.now_ms();
    let actor = ctx.peer.actor();
    let owned = name.to_owned();
    change(ctx, move |tx, changes| {
        if tx.account(&owned)?.is_none() {
            return Err(ApiError::not_found("account", &owned));
        }
        let live = tx
            .account_keys(&owned)?
            .iter()
            .filter(|k| k.is_live())
            .count();
        if live > 0 {
            return Err(ApiError::Conflict {
                code: "account_has_keys",
                message: format!("account {owned} still has {live} live keys; revoke them first"),
            });
        }
        tx.delete_account(&owned)?;
        tx.audit(now, actor, "account.delete", Some(&owned), json!({}))?;
        changes.removed_accounts.push(owned.clone());
        Ok(())
    })
    .await?;
    Ok(json(StatusCode::OK, &json!({"success": true})))
}

fn max_keys(n: u32) -> Result<u32, ApiError> {
    if n == 0 {
        return Err(ApiError::invalid(
            "max_active_keys",
            "max_active_keys must be at least 1",
        ));
    }
    Ok(n)
}

/// Account objects with their usage totals, read off the async workers.
async fn objects(
    ctx: &Ctx,
    accounts: Vec<(AccountRecord, Vec<KeyRecord>)>,
) -> Result<Vec<AccountObject>, ApiError> {
    ctx.app
        .blocking(move |app| {
            let now = app.clock.now_ms();
            accounts
                .iter()
                .map(|(a, keys)| {
                    let (usage, _) = app.usage_totals(&account_subject(&a.name))?;
                    Ok(views::account_object(a, keys, now, usage))
                })
                .collect::<Result<Vec<_>, StoreError>>()
        })
        .await
        .map_err(ApiError::from)
}

async fn one(
    ctx: &Ctx,
    account: AccountRecord,
    keys: Vec<KeyRecord>,
) -> Result<AccountObject, ApiError> {
    objects(ctx, vec![(account, keys)])
        .await?
        .pop()
        .ok_or_else(|| ApiError::Internal("an account object went missing".into()))
}
