//! keygate: an API-key gateway in front of OpenAI- and Anthropic-compatible LLM APIs.
#![forbid(unsafe_code)]

pub mod config;
pub mod scope;
