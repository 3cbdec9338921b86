# Listens on 127.0.0.1:18130, saves each Accounting-Request to the next file
# named on the command line and answers it (Response Authenticator per RFC 2866).
import socket, sys, hashlib
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 18130))
secret = b"testing123"
for name in sys.argv[1:]:
    data, addr = s.recvfrom(8192)
    open(name, "wb").write(data)
    resp = bytes([5, data[1]]) + (20).to_bytes(2, "big")
    s.sendto(resp + hashlib.md5(resp + data[4:20] + secret).digest(), addr)
