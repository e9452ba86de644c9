/* bcryptprimitives.dll for Wine 8, which lacks ProcessPrng: Go 1.22 and
 * later Windows binaries import it for their random numbers. It calls
 * RtlGenRandom (advapi32's SystemFunction036), which Wine has. Built and
 * copied into the Wine prefix by TestWine. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buf, ULONG len);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
	while (len > 0) {
		ULONG n = len > 0x10000000 ? 0x10000000 : (ULONG)len;
		if (!SystemFunction036(data, n))
			return FALSE;
		data += n;
		len -= n;
	}
	return TRUE;
}
