//! keygate: an API-key gateway in front of OpenAI- and Anthropic-compatible LLM APIs.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod keyring;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod net;
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod scope;
pub mod serve;
pub mod store;
pub mod telemetry;
pub mod usage;
