//! Fuzz target: see `spp_smtpd_fuzz::cdb_file`.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        spp_smtpd_fuzz::cdb_file(data);
    });
}
