# first-boot.ps1 - tc-ami first-boot script: Servo's Windows Server 2016 Taskcluster
# worker (generic-worker multiuser + worker-runner, aws provider). tc-ami sends it as
# EC2 user data in <powershell></powershell>. On success it shuts the machine down
# and tc-ami images the stopped instance. On failure it does NOT shut down (see end).
# Progress and failure go to the serial console for tc-ami (Write-Console below).
# Sources of every value: scripts/FIRST-BOOT.md.

# ---- PINS ---------------------------------------------------------------------
# Every empty Sha256 MUST be filled in from the publisher's release page before a
# production build. The script refuses to run while any is empty or malformed.
# Taskcluster release: newest number seen (mozilla-platform-ops/worker-images
# config/tceng/generic-worker-win2022-gpu.yaml). Asset names: taskcluster
# workers/generic-worker/build.sh, tools/{worker-runner,livelog}/build.sh,
# tools/taskcluster-proxy/dockerbuild.sh (no .exe suffix).
$TcVersion = '99.1.0'
$Tc = "https://github.com/taskcluster/taskcluster/releases/download/v$TcVersion"
$Deps = 'https://github.com/servo/servo-build-deps/releases/download/msvc-deps'
$Pins = [ordered]@{
  GenericWorker = @{ Url = "$Tc/generic-worker-multiuser-windows-amd64"; Sha256 = '' }
  StartWorker = @{ Url = "$Tc/start-worker-windows-amd64"; Sha256 = '' }
  Livelog = @{ Url = "$Tc/livelog-windows-amd64"; Sha256 = '' }
  TcProxy = @{ Url = "$Tc/taskcluster-proxy-windows-amd64"; Sha256 = '' }
  # NSSM 2.24: servo/servo etc/taskcluster/windows/first-boot.ps1
  Nssm = @{ Url = 'https://www.nssm.cc/release/nssm-2.24.zip'; Sha256 = '' }
  # .NET 4.8, Git, Python: URL and SHA-256 from servo/ci-runners windows10/configure-base.sh
  DotNet48 = @{ Url = 'https://download.visualstudio.microsoft.com/download/pr/2d6bb6b2-226a-4baa-bdec-798822606ff1/8494001c276a4b96804cde7829c04d7f/ndp48-x86-x64-allos-enu.exe'; Sha256 = '68c9986a8dcc0214d909aa1f31bee9fb5461bb839edca996a75b08ddffc1483f' }
  Git = @{ Url = 'https://github.com/git-for-windows/git/releases/download/v2.45.1.windows.1/Git-2.45.1-64-bit.exe'; Sha256 = '1b2b58fb516495feb70353aa91da230be0a2b4aa01acc3bc047ee1fe4846bc4e' }
  Python = @{ Url = 'https://www.python.org/ftp/python/3.10.11/python-3.10.11-amd64.exe'; Sha256 = 'd8dede5005564b408ba50317108b765ed9c3c510342a598f9fd42681cbe0648b' }
  # VS 2022 Build Tools. aka.ms serves whatever is newest: replace it with a
  # fixed-version bootstrapper from the VS 2022 release history, and its hash.
  VsBuildTools = @{ Url = 'https://aka.ms/vs/17/release/vs_buildtools.exe'; Sha256 = '' }
  # GStreamer 1.22.8: servo/servo python/servo/platform/windows.py
  Gst = @{ Url = "$Deps/gstreamer-1.0-msvc-x86_64-1.22.8.msi"; Sha256 = '' }
  GstDevel = @{ Url = "$Deps/gstreamer-1.0-devel-msvc-x86_64-1.22.8.msi"; Sha256 = '' }
}
# -------------------------------------------------------------------------------

# Fail loudly: any cmdlet error stops the script; everything goes to the transcript.
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'  # the progress bar makes Invoke-WebRequest slow
$Dl = 'C:\first-boot-downloads'

# tc-ami's console protocol (PRODUCT.md): one line on COM1, which EC2's GetConsoleOutput
# returns, and in the transcript. "TC-AMI-STEP: <stage>" as each stage starts,
# "TC-AMI-FAILED: <reason>" on giving up. No usable COM1: the transcript only.
function Write-Console([string]$Line) {
  $Line = $Line -replace '\s*[\r\n]+\s*', ' '
  Write-Host $Line
  try {
    $port = New-Object System.IO.Ports.SerialPort 'COM1'
    $port.WriteTimeout = 5000
    $port.Open()
    try { $port.WriteLine($Line) } finally { $port.Close() }
  } catch { }
}
function Write-Step([string]$Text) { Write-Console "TC-AMI-STEP: $Text" }

# Download a file and check its SHA-256; throw if no hash is pinned or it differs.
function Get-VerifiedFile([string]$Url, [string]$Sha256, [string]$OutFile) {
  if ($Sha256 -notmatch '^[0-9a-fA-F]{64}$') { throw "Refusing to download $Url : no SHA-256 pinned" }
  Write-Host "Downloading $Url"
  Invoke-WebRequest -Uri $Url -OutFile $OutFile -UseBasicParsing
  $got = (Get-FileHash -Path $OutFile -Algorithm SHA256).Hash
  if ($got -ne $Sha256) { Remove-Item $OutFile -Force; throw "SHA-256 mismatch for $Url : want $Sha256, got $got" }
}
function Get-Pinned([string]$Name, [string]$OutFile) {
  Get-VerifiedFile -Url $Pins[$Name].Url -Sha256 $Pins[$Name].Sha256 -OutFile $OutFile
  $OutFile
}

# Run a program, copy its output to the transcript, throw unless the exit code is
# allowed (3010 = success, reboot required: the final shutdown is that reboot).
function Invoke-Program([string]$File, [string]$ArgLine, [int[]]$Ok = @(0)) {
  Write-Host "> $File $ArgLine"
  $p = Start-Process -FilePath $File -ArgumentList $ArgLine -Wait -PassThru -NoNewWindow `
    -RedirectStandardOutput "$Dl\out.txt" -RedirectStandardError "$Dl\err.txt"
  Get-Content "$Dl\out.txt", "$Dl\err.txt" | Write-Host
  if ($Ok -notcontains $p.ExitCode) { throw "$File $ArgLine exited with code $($p.ExitCode)" }
}

$succeeded = $false
try {
  Start-Transcript -Path 'C:\first_boot.txt'
  Write-Step 'checking the SHA-256 pins'
  Set-ExecutionPolicy Unrestricted -Force -Scope Process  # lets us run EC2Launch's script below
  New-Item -ItemType Directory -Force -Path $Dl, 'C:\generic-worker', 'C:\worker-runner' | Out-Null
  # Check every pin before touching the machine, so an unpinned build fails at once.
  $bad = @($Pins.Keys | Where-Object { $Pins[$_].Sha256 -notmatch '^[0-9a-fA-F]{64}$' })
  if ($bad) { throw "No SHA-256 pinned for: $($bad -join ', ')" }

  Write-Step 'system settings: TLS, indexing, Defender, firewall, hosts'
  # TLS 1.2 for downloads (as in Servo's first-boot.ps1, bug 1443595).
  [Net.ServicePointManager]::SecurityProtocol = [Net.SecurityProtocolType]::Tls12

  # Performance, as in Servo's first-boot.ps1: no disk indexing, no Windows Defender.
  Get-WmiObject Win32_Volume -Filter "IndexingEnabled=$true" | Set-WmiInstance -Arguments @{IndexingEnabled = $false} | Out-Null
  Uninstall-WindowsFeature -Name Windows-Defender | Out-Host

  # Livelog: inbound PUT (60022) and GET (60023), its default ports (tools/livelog/main.go).
  New-NetFirewallRule -DisplayName 'Allow livelog PUT requests' -Direction Inbound -LocalPort 60022 -Protocol TCP -Action Allow | Out-Null
  New-NetFirewallRule -DisplayName 'Allow livelog GET requests' -Direction Inbound -LocalPort 60023 -Protocol TCP -Action Allow | Out-Null

  # http://taskcluster -> taskcluster-proxy, for tasks not using TASKCLUSTER_PROXY_URL.
  Add-Content -Path "$env:windir\System32\drivers\etc\hosts" -Value "`r`n127.0.0.1        taskcluster"

  Write-Step "installing Taskcluster $TcVersion (generic-worker, livelog, taskcluster-proxy, worker-runner)"
  # Taskcluster binaries, all from the same release.
  $gw = Get-Pinned GenericWorker 'C:\generic-worker\generic-worker.exe'
  Get-Pinned Livelog 'C:\generic-worker\livelog.exe' | Out-Null
  Get-Pinned TcProxy 'C:\generic-worker\taskcluster-proxy.exe' | Out-Null
  Get-Pinned StartWorker 'C:\worker-runner\start-worker.exe' | Out-Null
  Invoke-Program $gw '--version'
  # Chain-of-trust signing key, referenced from the runner config below.
  Invoke-Program $gw 'new-ed25519-keypair --file C:\generic-worker\generic-worker-ed25519-signing-key.key'

  Write-Step 'installing NSSM and the Generic Worker and worker-runner services'
  # NSSM, to run generic-worker and worker-runner as Windows services.
  Expand-Archive -Path (Get-Pinned Nssm "$Dl\nssm-2.24.zip") -DestinationPath 'C:\' -Force
  $nssm = 'C:\nssm-2.24\win64\nssm.exe'
  function Install-NssmService([string]$Name, [string]$Exe, [string[]]$Settings) {
    Invoke-Program $nssm "install `"$Name`" $Exe"
    foreach ($s in $Settings) { Invoke-Program $nssm "set `"$Name`" $s" }
  }
  # "Generic Worker" service: the settings of worker-runner's docs, "Recommended
  # Setup" (ui/docs/reference/workers/worker-runner/deployment.mdx). Demand-start:
  # worker-runner starts it. (`generic-worker install service` is not suitable.)
  $gwLog = 'C:\generic-worker\generic-worker-service.log'
  Install-NssmService 'Generic Worker' $gw @(
    'AppDirectory C:\generic-worker',
    'AppParameters run --config C:\generic-worker\generic-worker-config.yml --worker-runner-protocol-pipe \\.\pipe\generic-worker --with-worker-runner',
    'DisplayName "Generic Worker"',
    'Description "A taskcluster worker that runs on all mainstream platforms"',
    'Start SERVICE_DEMAND_START', 'Type SERVICE_WIN32_OWN_PROCESS', 'AppPriority NORMAL_PRIORITY_CLASS',
    'AppNoConsole 1', 'AppAffinity All', 'AppStopMethodSkip 0', 'AppStopMethodConsole 1500',
    'AppStopMethodWindow 1500', 'AppStopMethodThreads 1500', 'AppThrottle 1500', 'AppExit Default Exit',
    'AppRestartDelay 0', "AppStdout $gwLog", "AppStderr $gwLog", 'AppStdoutCreationDisposition 4',
    'AppStderrCreationDisposition 4', 'AppRotateFiles 1', 'AppRotateOnline 1', 'AppRotateSeconds 3600', 'AppRotateBytes 0')
  # "worker-runner" service, started at boot, as in taskcluster/community-tc-config
  # imagesets/generic-worker-win2016-amd/bootstrap.ps1.
  $wrLog = 'C:\worker-runner\worker-runner-service.log'
  Install-NssmService 'worker-runner' 'C:\worker-runner\start-worker.exe' @(
    'AppDirectory C:\worker-runner', 'AppParameters C:\worker-runner\runner.yml',
    'DisplayName "Worker Runner"', 'Description "Interface between workers and Taskcluster services"',
    'Start SERVICE_AUTO_START', 'Type SERVICE_WIN32_OWN_PROCESS', 'AppNoConsole 1', 'AppAffinity All',
    'AppStopMethodSkip 0', 'AppExit Default Exit', 'AppRestartDelay 0', "AppStdout $wrLog", "AppStderr $wrLog",
    'AppRotateFiles 1', 'AppRotateOnline 1', 'AppRotateSeconds 3600', 'AppRotateBytes 0')

  # Runner config: aws provider, generic-worker run as the service above. Must be
  # UTF-8 with Unix newlines (tools/worker-runner/README.md), hence WriteAllText.
  $runner = @'
provider:
  providerType: aws
worker:
  implementation: generic-worker
  service: "Generic Worker"
  configPath: C:\generic-worker\generic-worker-config.yml
  protocolPipe: \\.\pipe\generic-worker
cacheOverRestarts: C:\generic-worker\start-worker-cache.json
workerConfig:
  ed25519SigningKeyLocation: C:\generic-worker\generic-worker-ed25519-signing-key.key
  livelogExecutable: C:\generic-worker\livelog.exe
  taskclusterProxyExecutable: C:\generic-worker\taskcluster-proxy.exe
'@
  [IO.File]::WriteAllText('C:\worker-runner\runner.yml', ($runner -replace "`r`n", "`n") + "`n")

  Write-Step 'installing .NET Framework 4.8 if missing'
  # .NET 4.8 (release key 528040) before Visual Studio, as Servo's runner image does
  # (servo/ci-runners windows10/init.ps1).
  if ((Get-ItemProperty 'HKLM:\SOFTWARE\Microsoft\NET Framework Setup\NDP\v4\Full').Release -lt 528040) {
    Invoke-Program (Get-Pinned DotNet48 "$Dl\ndp48.exe") '/q /norestart' @(0, 3010)
  }

  Write-Step 'installing Git for Windows'
  # Git for Windows, for all users.
  Invoke-Program (Get-Pinned Git "$Dl\git.exe") '/VERYSILENT /NORESTART /SUPPRESSMSGBOXES /LOG=C:\git-install.log' @(0, 3010)
  if (-not (Test-Path 'C:\Program Files\Git\cmd\git.exe')) { throw 'git.exe missing after install' }

  Write-Step 'installing Python'
  # Python, for all users (task users are created per task) and on the system PATH.
  Invoke-Program (Get-Pinned Python "$Dl\python.exe") '/quiet InstallAllUsers=1 PrependPath=1' @(0, 3010)
  if (-not (Test-Path 'C:\Program Files\Python310\python.exe')) { throw 'python.exe missing after install' }

  Write-Step 'installing Visual Studio 2022 Build Tools'
  # VS 2022 Build Tools with the components the Servo book lists for Windows
  # (servo/book src/hacking/setting-up-your-environment.md): Windows 10 SDK
  # 10.0.19041, MSVC v143 x64/x86, ATL, MFC.
  Invoke-Program (Get-Pinned VsBuildTools "$Dl\vs_buildtools.exe") ('--quiet --wait --norestart --nocache ' +
    '--add Microsoft.VisualStudio.Component.Windows10SDK.19041 --add Microsoft.VisualStudio.Component.VC.Tools.x86.x64 ' +
    '--add Microsoft.VisualStudio.Component.VC.ATL --add Microsoft.VisualStudio.Component.VC.ATLMFC') @(0, 3010)
  $vswhere = "${env:ProgramFiles(x86)}\Microsoft Visual Studio\Installer\vswhere.exe"
  if ((& $vswhere -products * -property isComplete) -ne '1') { throw 'Visual Studio Build Tools install is not complete' }

  Write-Step 'installing GStreamer'
  # GStreamer runtime + development MSIs, extracted the way mach does it (msiexec /a),
  # into C:\gstreamer\1.0\msvc_x86_64, a root that windows.py looks for.
  foreach ($g in 'Gst', 'GstDevel') {
    Invoke-Program 'msiexec.exe' "/a `"$(Get-Pinned $g "$Dl\$g.msi")`" TARGETDIR=C:\ /qn" @(0, 3010)
  }
  if (-not (Test-Path 'C:\gstreamer\1.0\msvc_x86_64\bin\ffi-7.dll')) { throw 'GStreamer missing after install' }

  Write-Step 'preparing EC2Launch for the image'
  # EC2Launch v1 (Windows Server 2016): re-run instance initialisation (network
  # routes etc.) on the next boot of instances made from this image, and keep the
  # Administrator password that tc-ami stores with the image. From
  # taskcluster/community-tc-config imagesets/generic-worker-win2016-amd/bootstrap.ps1.
  $launch = 'C:\ProgramData\Amazon\EC2-Windows\Launch'
  if (-not (Test-Path "$launch\Scripts\InitializeInstance.ps1")) { throw "EC2Launch v1 not found under $launch" }
  $cfg = Get-Content "$launch\Config\LaunchConfig.json" -Raw | ConvertFrom-Json
  $cfg.adminPasswordType = 'DoNothing'
  $cfg | ConvertTo-Json -Depth 32 | Set-Content "$launch\Config\LaunchConfig.json"
  & "$launch\Scripts\InitializeInstance.ps1" -Schedule

  Remove-Item $Dl -Recurse -Force
  Write-Step 'finished: shutting down for imaging'
  $succeeded = $true
} catch {
  Write-Console "TC-AMI-FAILED: $_"
  Write-Host $_.ScriptStackTrace
  Set-Content -Path 'C:\first_boot_FAILED.txt' -Value "$_"
} finally {
  try { Stop-Transcript | Out-Null } catch { }
}

# Only a complete install may become an image: tc-ami images the instance once it
# stops. A failed run therefore does NOT shut down: it stays running until tc-ami,
# reading TC-AMI-FAILED on the console (or its build timeout), ends the build.
if ($succeeded) { shutdown.exe /s /t 0 } else { exit 1 }
