// queue_fsync: the durable Haraka peer. Writes each message to its own file in
// $BENCH_SPOOL_DIR, fsyncs it, and only then answers 250 (next(OK)).
'use strict'

const fs = require('node:fs')
const path = require('node:path')

let sequence = 0

exports.register = function () {
    this.spool = process.env.BENCH_SPOOL_DIR
    if (!this.spool) throw new Error('queue_fsync: set BENCH_SPOOL_DIR')
}

exports.hook_queue = function (next, connection) {
    const txn = connection.transaction
    sequence += 1
    const file = path.join(this.spool, `${process.pid}.${Date.now()}.${sequence}.eml`)
    fs.open(file, 'wx', 0o600, (err, fd) => {
        if (err) return next(DENYSOFT, `cannot create queue file: ${err.message}`)
        const out = fs.createWriteStream(null, { fd, autoClose: false })
        let failed = false
        out.on('error', (writeErr) => {
            failed = true
            fs.close(fd, () => next(DENYSOFT, `cannot write queue file: ${writeErr.message}`))
        })
        out.on('finish', () => {
            if (failed) return
            fs.fsync(fd, (syncErr) => {
                fs.close(fd, () => {
                    if (syncErr) return next(DENYSOFT, `fsync failed: ${syncErr.message}`)
                    next(OK)
                })
            })
        })
        txn.message_stream.pipe(out, { dot_stuffed: false })
    })
}

// Mail from an authenticated client is relaying: Haraka hands it to queue_outbound, not
// queue. Held the same way (the submission workload's delivery is held on every system).
exports.hook_queue_outbound = exports.hook_queue
