// Preloaded into the suite's origin server (node --require): its server.listen(port) would
// listen on every interface; the adapter keeps all of its traffic on 127.0.0.1.
const net = require('net')
const listen = net.Server.prototype.listen
net.Server.prototype.listen = function (port, ...rest) {
  if (typeof port === 'number' || (typeof port === 'string' && /^[0-9]+$/.test(port))) {
    return listen.call(this, Number(port), '127.0.0.1', ...rest)
  }
  return listen.call(this, port, ...rest)
}
