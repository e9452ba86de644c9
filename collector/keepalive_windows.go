//go:build windows

package collector

import "golang.org/x/sys/windows/registry"

func init() {
	readTcpipParameter = func(name string) (uint32, error) {
		k, err := registry.OpenKey(registry.LOCAL_MACHINE, `SYSTEM\CurrentControlSet\Services\Tcpip\Parameters`, registry.QUERY_VALUE)
		if err != nil {
			return 0, err
		}
		defer k.Close()
		v, _, err := k.GetIntegerValue(name)
		return uint32(v), err
	}
}
