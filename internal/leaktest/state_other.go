//go:build !linux

package leaktest

import (
	"errors"
	"os"
)

const closeWait = 8

func tcpState(*os.File) (uint8, error) { return 0, errors.New("leaktest: TCP state needs Linux") }
