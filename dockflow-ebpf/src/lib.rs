#![no_std]
// Exists so the host can resolve this crate as a (build) dependency; the programs are in main.rs.
