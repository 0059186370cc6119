//! Facts that more than one command gathers (no command imports another: what they share
//! lives here).

pub mod published_modules;
