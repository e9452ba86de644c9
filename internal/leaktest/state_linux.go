package leaktest

import (
	"os"

	"golang.org/x/sys/unix"
)

const closeWait = 8 // TCP_CLOSE_WAIT

func tcpState(f *os.File) (uint8, error) {
	info, err := unix.GetsockoptTCPInfo(int(f.Fd()), unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return 0, err
	}
	return info.State, nil
}
