//! Fuzz target: see `spp_smtpd_fuzz::auth_replies`.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        spp_smtpd_fuzz::auth_replies(data);
    });
}
