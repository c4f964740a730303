//! System handlers: the audit log, status, the effective config and reload.

use http::StatusCode;
use serde_json::json;

use super::api::AuditEntry;
use super::{AdminResponse, ApiError, Ctx, Query, json, views};
use crate::control::Command;
use crate::reload::Trigger;

/// SPEC §3: audit `limit` default and maximum.
const AUDIT_DEFAULT: usize = 100;
const AUDIT_MAX: usize = 1000;

pub async fn audit(ctx: &Ctx, query: &Query) -> Result<AdminResponse, ApiError> {
    let limit = query.limit("limit", AUDIT_DEFAULT, AUDIT_MAX)?;
    let before = match query.get("before") {
        None => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| ApiError::InvalidQuery {
            param: "before".into(),
            message: "before must be an audit sequence number".into(),
        })?),
    };
    let records = ctx
        .app
        .blocking(move |app| app.store.read(|tx| tx.audit(limit, before)))
        .await
        .map_err(ApiError::from)?;
    let entries: Vec<AuditEntry> = records.iter().map(views::audit_entry).collect();
    Ok(json(StatusCode::OK, &entries))
}

pub async fn status(ctx: &Ctx) -> Result<AdminResponse, ApiError> {
    let app = &ctx.app;
    // Status must answer when the store cannot (a full disk): it says so instead of failing.
    let stored = app
        .blocking(|app| app.store.read(|tx| tx.key_count()))
        .await;
    let (keys_stored, store_error) = match stored {
        Ok(n) => (Some(n), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let stats = &app.flush_stats;
    let relaxed = std::sync::atomic::Ordering::Relaxed;
    let body = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": app.uptime_ms() / 1000,
        "config_generation": app.generation(),
        "config_source": app.config().source.as_ref().map(|p| p.display().to_string()),
        "last_reload": app.last_reload.get(),
        "keys": {
            "stored": keys_stored,
            "indexed_secrets": app.keyring.len(),
        },
        "accounts": app.keyring.account_count(),
        "requests_served": app.requests_served(),
        "store": {"ok": store_error.is_none(), "error": store_error},
        "usage_flush": {
            "ok": stats.ok.load(relaxed),
            "failed": stats.failed.load(relaxed),
            "failing_in_a_row": stats.failing.load(relaxed),
        },
    });
    Ok(json(StatusCode::OK, &body))
}

pub async fn config(ctx: &Ctx) -> Result<AdminResponse, ApiError> {
    let snapshot = ctx.app.config();
    let body = json!({
        "generation": ctx.app.generation(),
        "source": snapshot.source.as_ref().map(|p| p.display().to_string()),
        "warnings": snapshot.warnings,
        "last_reload": ctx.app.last_reload.get(),
        "config": snapshot.to_json(),
    });
    Ok(json(StatusCode::OK, &body))
}

pub async fn reload(ctx: &Ctx) -> Result<AdminResponse, ApiError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let command = Command::Reload {
        trigger: Trigger::Api,
        reply: Some(reply),
    };
    let unavailable = || ApiError::Internal("the config controller is not running".into());
    ctx.app
        .control()
        .send(command)
        .await
        .map_err(|_| unavailable())?;
    let report = answer.await.map_err(|_| unavailable())?;
    let actor = ctx.peer.actor();
    let details = json!({"ok": report.ok, "generation": report.generation,
        "errors": report.errors.len(), "restart_needed": report.restart_needed});
    ctx.app
        .blocking(move |app| {
            let now = app.clock.now_ms();
            app.store
                .write(|tx| tx.audit(now, actor, "config.reload", None, details))
        })
        .await
        .map_err(ApiError::from)?;
    let status = if report.ok {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    Ok(json(status, &report))
}

pub async fn metrics(ctx: &Ctx) -> Result<AdminResponse, ApiError> {
    let mut resp = AdminResponse::new(http_body_util::Full::new(bytes::Bytes::from(
        ctx.app.metrics.render(&ctx.app),
    )));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    Ok(resp)
}
