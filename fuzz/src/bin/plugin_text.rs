//! Fuzz target: see `spp_smtpd_fuzz::plugin_text`.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        spp_smtpd_fuzz::plugin_text(data);
    });
}
