@echo off
rem Install the Netmon sniffer agent on Windows (run from an elevated prompt).
rem
rem   install.bat C:\path\to\agent.toml
rem
rem agent.toml is what `netmon agents add NAME --branch B --server-url wss://...` printed.
rem Steps (running it again upgrades): check for Npcap (packet capture driver) and run the
rem Npcap installer placed next to this script if it is missing; create
rem C:\ProgramData\NetflowMonitor (config, spool, logs; only SYSTEM and Administrators may read
rem it: the config holds the agent's key); a Python virtualenv with netmon[agent]; a scheduled
rem task "NetflowMonitor Agent" that starts the agent as SYSTEM at every boot.
rem Flow control uses goto, not parenthesized blocks: %VAR% inside a block is expanded before
rem the block runs.
setlocal EnableExtensions

set "CONFIG=%~1"
set "HERE=%~dp0"
set "APPDIR=%ProgramData%\NetflowMonitor"
set "VENV=%APPDIR%\venv"
set "TASK=NetflowMonitor Agent"
if "%NETMON_PACKAGE%"=="" set "NETMON_PACKAGE=%HERE%..[agent]"

rem --- 1. Administrator rights and arguments ----------------------------------------------
net session >nul 2>&1
if errorlevel 1 goto not_admin
if "%CONFIG%"=="" if not exist "%APPDIR%\agent.toml" goto usage
if not "%CONFIG%"=="" if not exist "%CONFIG%" goto no_config

rem --- 2. Npcap: the capture driver -------------------------------------------------------
call :has_npcap
if not errorlevel 1 goto npcap_ok
set "NPCAP_SETUP="
for %%F in ("%HERE%npcap-*.exe") do set "NPCAP_SETUP=%%~fF"
if not defined NPCAP_SETUP goto npcap_missing
echo install.bat: running the Npcap installer ^(its defaults are fine^)
start /wait "" "%NPCAP_SETUP%"
call :has_npcap
if errorlevel 1 goto npcap_missing
:npcap_ok
echo install.bat: Npcap found

rem --- 3. C:\ProgramData\NetflowMonitor, readable by SYSTEM and Administrators only -------
if not exist "%APPDIR%" mkdir "%APPDIR%"
if not exist "%APPDIR%\spool" mkdir "%APPDIR%\spool"
if not exist "%APPDIR%\logs" mkdir "%APPDIR%\logs"
icacls "%APPDIR%" /inheritance:r /grant:r "*S-1-5-18:(OI)(CI)F" "*S-1-5-32-544:(OI)(CI)F" >nul
if errorlevel 1 goto no_acl
if "%CONFIG%"=="" goto config_done
rem The spool moves under ProgramData; every other line is kept as netmon agents add wrote it.
powershell -NoProfile -ExecutionPolicy Bypass -Command "(Get-Content -LiteralPath '%CONFIG%') -replace '^spool_dir = .*', ('spool_dir = ''' + '%APPDIR%\spool'.Replace('\','/') + '''') | Set-Content -LiteralPath '%APPDIR%\agent.toml' -Encoding ascii"
if errorlevel 1 goto no_write
:config_done

rem --- 4. Python virtualenv with the agent ------------------------------------------------
where py >nul 2>&1
if errorlevel 1 goto no_python
if not exist "%VENV%\Scripts\python.exe" py -3 -m venv "%VENV%"
"%VENV%\Scripts\python.exe" -c "import sys; sys.exit(sys.version_info < (3, 11))"
if errorlevel 1 goto old_python
"%VENV%\Scripts\python.exe" -m pip install --quiet --upgrade "%NETMON_PACKAGE%"
if errorlevel 1 goto no_pip

rem --- 5. Startup task: the agent as SYSTEM at every boot ---------------------------------
rem The task runs a launcher script: redirection inside schtasks /TR quoting is fragile.
> "%APPDIR%\run-agent.cmd" echo @"%VENV%\Scripts\netmon.exe" agent run --config "%APPDIR%\agent.toml" ^>^> "%APPDIR%\logs\agent.log" 2^>^&1
schtasks /Create /F /TN "%TASK%" /SC ONSTART /RU SYSTEM /RL HIGHEST /TR "%APPDIR%\run-agent.cmd" >nul
if errorlevel 1 goto no_task
schtasks /Run /TN "%TASK%" >nul
echo install.bat: installed; the agent runs now and at every boot (task "%TASK%").
echo install.bat: logs in %APPDIR%\logs\agent.log
exit /b 0

rem --- Errors: a clear message each, nothing else changed after the failed step -----------
:not_admin
echo install.bat: run this from an elevated prompt ^(Run as administrator^). 1>&2
exit /b 1
:usage
echo usage: install.bat AGENT_TOML   ^(the output of netmon agents add^) 1>&2
exit /b 2
:no_config
echo install.bat: cannot read %CONFIG% 1>&2
exit /b 2
:npcap_missing
echo install.bat: Npcap is not installed. Download it from https://npcap.com/#download, 1>&2
echo put npcap-VERSION.exe next to this script and run install.bat again. 1>&2
exit /b 3
:no_acl
echo install.bat: could not restrict the permissions of %APPDIR% 1>&2
exit /b 4
:no_write
echo install.bat: could not write %APPDIR%\agent.toml 1>&2
exit /b 4
:no_python
echo install.bat: Python 3.11+ with the py launcher is required ^(https://www.python.org/^). 1>&2
exit /b 5
:old_python
echo install.bat: the virtualenv's Python is older than 3.11 1>&2
exit /b 5
:no_pip
echo install.bat: pip could not install %NETMON_PACKAGE% 1>&2
exit /b 5
:no_task
echo install.bat: could not register the startup task 1>&2
exit /b 6

rem Exit status 0 when Npcap's DLL or its registry key is present.
:has_npcap
if exist "%SystemRoot%\System32\Npcap\wpcap.dll" exit /b 0
reg query "HKLM\SOFTWARE\Npcap" >nul 2>&1
if not errorlevel 1 exit /b 0
exit /b 1
