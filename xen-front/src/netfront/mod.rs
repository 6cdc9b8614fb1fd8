//! The uplink netfront (to sys-net's netback).
