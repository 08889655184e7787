//! Fuzz target: see `spp_smtpd_fuzz::proxy_header`.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        spp_smtpd_fuzz::proxy_header(data);
    });
}
