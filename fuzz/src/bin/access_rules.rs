//! Fuzz target: see `spp_smtpd_fuzz::access_rules`.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        spp_smtpd_fuzz::access_rules(data);
    });
}
