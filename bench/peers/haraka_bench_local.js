// bench_local: answers Haraka's reverse-DNS step for loopback clients without a lookup,
// so the benchmark sends no DNS traffic (Postfix runs with smtpd_peername_lookup = no).
'use strict'

exports.hook_lookup_rdns = function (next) {
    next(OK, 'localhost')
}
