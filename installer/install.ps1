# Restora's one-command installer for Windows: finds a Python 3.10+ that can make virtual
# environments, then runs installer\install.py with it (standard library only).
#
#   powershell -ExecutionPolicy Bypass -File installer\install.ps1 [options]
#   options: the same as install.py (--help lists them); $env:RESTORA_PYTHON chooses the Python
$ErrorActionPreference = 'Stop'
$here = Split-Path -Parent $MyInvocation.MyCommand.Path

# each candidate: the program and the arguments that select a Python (the py launcher's -3.12)
$candidates = @()
if ($env:RESTORA_PYTHON) {
    $candidates += , @($env:RESTORA_PYTHON)
} else {
    foreach ($version in '3.12', '3.13', '3.11', '3.10') { $candidates += , @('py', "-$version") }
    $candidates += , @('python')
    $candidates += , @('python3')
}

# one line, single quotes only: Windows PowerShell 5.1 mangles double quotes in arguments
$probe = "import sys, ensurepip, venv; v = sys.version_info[:2]; " +
    "print(('ok ' if v >= (3, 10) else 'old ') + '%d.%d' % v)"

$python = $null
$found = @()
foreach ($candidate in $candidates) {
    $program = $candidate[0]
    $selector = @($candidate | Select-Object -Skip 1)
    if (-not (Get-Command $program -ErrorAction SilentlyContinue)) { continue }
    try {
        # the Microsoft Store's python.exe stand-in prints an advert and fails: skipped here
        $answer = & $program @selector -c $probe 2>$null
    } catch {
        continue
    }
    if ($LASTEXITCODE -eq 0 -and "$answer" -like 'ok *') {
        $python = $candidate
        break
    }
    if ("$answer" -like 'old *') { $found += "$program $selector ($("$answer".Substring(4)))" }
}

if (-not $python) {
    if ($found.Count -gt 0) {
        Write-Host "Restora needs Python 3.10 or newer; found only: $($found -join ', ')."
    } else {
        Write-Host "Restora needs Python 3.10 or newer, and none was found."
    }
    Write-Host "Install it with:  winget install -e --id Python.Python.3.12"
    Write-Host "or from https://www.python.org/downloads/windows/ (tick 'Add python.exe to PATH'),"
    Write-Host "then open a new PowerShell window and run this again."
    Write-Host "A Python elsewhere:  `$env:RESTORA_PYTHON = 'C:\path\to\python.exe'"
    exit 1
}

$program = $python[0]
$selector = @($python | Select-Object -Skip 1)
Write-Host "Using $program $selector"
$ErrorActionPreference = 'Continue'  # pip's warnings on stderr are not failures
& $program @selector (Join-Path $here 'install.py') @args
exit $LASTEXITCODE
